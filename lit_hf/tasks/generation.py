"""Encoder-decoder evaluation shared by the generating families: one encoder pass for the loss and `generate`,
hypotheses as text, and the generation options."""

from typing import Any

from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lit_hf.errors import ConfigError, LitHFError
from lit_hf.metrics import NextTokenNLL
from lit_hf.models import T5_FAMILY
from lit_hf.predictions import gather_by_index


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


def generate_kwargs(
    tokenizer: PreTrainedTokenizerBase, num_beams: int | None, max_new_tokens: int | None, forced_bos_token: str | None
) -> dict[str, Any]:
    """The options given; what is left unset comes from the model's generation config."""
    kwargs: dict[str, Any] = {}
    if num_beams is not None:
        kwargs["num_beams"] = num_beams
    if max_new_tokens is not None:
        kwargs["max_new_tokens"] = max_new_tokens
    if forced_bos_token is not None:
        token_id = tokenizer.convert_tokens_to_ids(forced_bos_token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise ConfigError(f"forced_bos_token {forced_bos_token!r} is not a token of the tokenizer.")
        kwargs["forced_bos_token_id"] = token_id
    return kwargs


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
    tokens = model.generate(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs
    )  # (batch, generated_len), starting with the decoder start token
    texts = tokenizer.batch_decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    lengths = (tokens != tokenizer.pad_token_id).sum(-1).float()  # as run_translation.py counts gen_len
    return [text.strip().replace("\r", " ").replace("\n", " ") for text in texts], lengths


def in_dataset_order(rows: list[tuple[int, str]]) -> list[str]:
    """Every process's (index, text) rows, on every process, as texts in dataset order."""
    ordered = gather_by_index(rows)
    if [index for index, _ in ordered] != list(range(len(ordered))):
        rank_zero_warn(f"Only {len(ordered)} examples were generated (limit_*_batches?); written in order.")
    return [text for _, text in ordered]
