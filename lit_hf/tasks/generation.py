"""Encoder-decoder evaluation shared by the generating families: one encoder pass for the loss and `generate`,
hypotheses as text, and the generation options."""

import copy
from collections.abc import Mapping
from typing import Any

from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from lit_hf.errors import ConfigError, LitHFError, check_positive
from lit_hf.metrics import NextTokenNLL
from lit_hf.models import T5_FAMILY
from lit_hf.speed import eager


def warn_if_fp16_overflows(model: PreTrainedModel, precision: str) -> None:
    if precision.startswith("16") and model.config.model_type in T5_FAMILY:
        rank_zero_warn(
            f"{model.config.model_type} in float16 ({precision}) overflows to NaN; "
            "use --trainer.precision=bf16-mixed (or 32-true where bfloat16 is unsupported)."
        )


def ensure_decoder_start(model: PreTrainedModel, name: str) -> None:
    """T5 decodes from the pad token; a `T5Config()` made in transformers 5 leaves decoder_start_token_id out."""
    config = model.config
    if getattr(config, "decoder_start_token_id", None) is not None:
        return
    if config.model_type not in T5_FAMILY:
        raise LitHFError(f"The config of {name!r} has no decoder_start_token_id; set it in config.json.")
    config.decoder_start_token_id = config.pad_token_id
    model.generation_config.decoder_start_token_id = config.pad_token_id


# The `transformers.GenerationConfig` options a generating task takes as constructor options (same names).
GENERATION_OPTIONS = (
    "max_new_tokens",
    "num_beams",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "repetition_penalty",
    "no_repeat_ngram_size",
    "length_penalty",
    "early_stopping",
)


def generation_options(
    tokenizer: PreTrainedTokenizerBase, options: Mapping[str, Any], forced_bos_token: str | None = None
) -> dict[str, Any]:
    """The `GenerationConfig` options set in `options` (a task's hyperparameters); those left None come from the
    model's own generation config at `generate` time. One function for every generating task."""
    kwargs = {name: options[name] for name in GENERATION_OPTIONS if options.get(name) is not None}
    check_positive(**{k: kwargs.get(k) for k in ("max_new_tokens", "num_beams")})
    if kwargs.get("top_k", 0) < 0:
        raise ConfigError(f"top_k must be 0 (no top-k filtering) or more, got {kwargs['top_k']}.")
    for name in ("temperature", "top_p", "repetition_penalty"):
        if name in kwargs and kwargs[name] <= 0:
            raise ConfigError(f"{name} must be positive, got {kwargs[name]}.")
    if kwargs.get("top_p", 0) > 1:
        raise ConfigError(f"top_p is a probability mass in (0, 1], got {kwargs['top_p']}.")
    if forced_bos_token is not None:
        token_id = tokenizer.convert_tokens_to_ids(forced_bos_token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise ConfigError(f"forced_bos_token {forced_bos_token!r} is not a token of the tokenizer.")
        kwargs["forced_bos_token_id"] = token_id
    return kwargs


def generate_kwargs(
    tokenizer: PreTrainedTokenizerBase, num_beams: int | None, max_new_tokens: int | None, forced_bos_token: str | None
) -> dict[str, Any]:
    """The options given; what is left unset comes from the model's generation config."""
    return generation_options(tokenizer, {"num_beams": num_beams, "max_new_tokens": max_new_tokens}, forced_bos_token)


def exported_generation_config(model: PreTrainedModel, kwargs: dict[str, Any]) -> GenerationConfig:
    """The model's generation config with the task's options written in, so `pipeline()` on an export generates
    as lit_hf did without being told the options again."""
    config = copy.deepcopy(model.generation_config)
    config.update(**kwargs)
    return config


def update_loss(model: PreTrainedModel, nll: NextTokenNLL, batch: dict[str, Any], reuse_encoder: bool = True) -> Any:
    """Adds the batch's token NLL to `nll` and returns the encoder outputs, for `generate` to reuse.

    The loss and generation read one encoder pass: the same outputs as two, for one pass less per batch. Under
    FSDP (`reuse_encoder=False`) the encoder cannot be called on its own: the root's weights (the shared
    embedding) are gathered only by the whole model's forward, so the loss takes that and returns None.
    """
    labels = batch["labels"]
    if not reuse_encoder:
        inputs = {key: batch[key] for key in ("input_ids", "attention_mask")}
        decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)
        nll.update(model(**inputs, decoder_input_ids=decoder_input_ids).logits, labels)
        return None
    encoder_outputs = model.get_encoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = model(
        encoder_outputs=encoder_outputs,
        attention_mask=batch["attention_mask"],
        decoder_input_ids=model.prepare_decoder_input_ids_from_labels(labels=labels),
    ).logits  # (batch, target_len, vocab)
    nll.update(logits, labels)
    return encoder_outputs


def generate_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    batch: dict[str, Any],
    kwargs: dict[str, Any],
    encoder_outputs: Any = None,
) -> tuple[list[str], Tensor]:
    """Hypotheses as text, one line each (nothing stays on the device), and their lengths in non-padding tokens."""
    if encoder_outputs is not None:  # generate reuses them instead of running the encoder again
        kwargs = {**kwargs, "encoder_outputs": encoder_outputs}
    with eager():  # a compiled model would recompile as the decoded length grows
        tokens = model.generate(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs
        )  # (batch, generated_len), starting with the decoder start token
    texts = tokenizer.batch_decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    lengths = (tokens != tokenizer.pad_token_id).sum(-1).float()  # as run_translation.py counts gen_len
    return [text.strip().replace("\r", " ").replace("\n", " ") for text in texts], lengths
