"""Encoder-decoder evaluation shared by the generating families: one encoder pass for the loss and `generate`,
hypotheses as text, and the generation options."""

import copy
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from transformers import (
    DynamicCache,
    EncoderDecoderCache,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.configuration_utils import GenerationMode

from lit_hf.chunked_nll import nll_sums
from lit_hf.errors import ConfigError, LitHFError
from lit_hf.metrics import NextTokenNLL
from lit_hf.models import T5_FAMILY
from lit_hf.options import GenerationOptions
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


def generate_kwargs(
    generation: GenerationOptions, tokenizer: PreTrainedTokenizerBase, forced_bos_token: str | None = None
) -> dict[str, Any]:
    """The `generate` options a generating task passes: those set in `generation` (the ones left None come from
    the model's own generation config at `generate` time) and the id of `forced_bos_token`."""
    kwargs = generation.given()
    if forced_bos_token is not None:
        token_id = tokenizer.convert_tokens_to_ids(forced_bos_token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise ConfigError(f"forced_bos_token {forced_bos_token!r} is not a token of the tokenizer.")
        kwargs["forced_bos_token_id"] = token_id
    return kwargs


def exported_generation_config(model: PreTrainedModel, kwargs: dict[str, Any]) -> GenerationConfig:
    """The model's generation config with the task's options written in, so `pipeline()` on an export generates
    as lit_hf did without being told the options again."""
    config = copy.deepcopy(model.generation_config)
    config.update(**kwargs)
    return config


def update_loss(
    model: PreTrainedModel, nll: NextTokenNLL, batch: dict[str, Any], reuse_encoder: bool = True, chunked: bool = False
) -> Any:
    """Adds the batch's token NLL to `nll` and returns the encoder outputs, for `generate` to reuse. `chunked`: the
    model's output layer is a `lit_hf.chunked_nll.ChunkedHead`, which scores the labels without full logits.

    The loss and generation read one encoder pass: the same outputs as two, for one pass less per batch. Under
    FSDP (`reuse_encoder=False`) the encoder cannot be called on its own: the root's weights (the shared
    embedding) are gathered only by the whole model's forward, so the loss takes that and returns None.
    """
    if not reuse_encoder:
        _add_nll(model, nll, {key: batch[key] for key in ("input_ids", "attention_mask")}, batch["labels"], chunked)
        return None
    encoder_outputs = model.get_encoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    inputs = {"encoder_outputs": encoder_outputs, "attention_mask": batch["attention_mask"]}
    _add_nll(model, nll, inputs, batch["labels"], chunked)
    return encoder_outputs


def _add_nll(model: PreTrainedModel, nll: NextTokenNLL, inputs: dict[str, Any], labels: Tensor, chunked: bool) -> None:
    inputs["decoder_input_ids"] = model.prepare_decoder_input_ids_from_labels(labels=labels)
    if chunked:  # float64 sums chunk by chunk inside the output layer; decoder position t predicts label t
        nll.update(sums=nll_sums(model, inputs, labels.reshape(-1)))
    else:
        nll.update(model(**inputs).logits, labels)  # (batch, target_len, vocab)


def generate_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    batch: dict[str, Any],
    kwargs: dict[str, Any],
    encoder_outputs: Any = None,
    drop_finished: bool = False,
) -> tuple[list[str], Tensor]:
    """Hypotheses as text, one line each (nothing stays on the device), and their lengths in non-padding tokens.

    With `drop_finished`, greedy search leaves the rows that have ended out of the batch as it goes
    (`generate_dropping_finished`); other searches, and sharded runs (`synced_gpus`), decode the batch whole.
    """
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    limit = droppable_limit(model, kwargs) if drop_finished else None
    with eager():  # a compiled model would recompile as the decoded length grows
        if limit is not None:
            tokens = generate_dropping_finished(model, inputs, kwargs, limit, encoder_outputs)
        else:
            if encoder_outputs is not None:  # generate reuses them instead of running the encoder again
                kwargs = {**kwargs, "encoder_outputs": encoder_outputs}
            tokens = model.generate(**inputs, **kwargs)  # (batch, generated_len), from the decoder start token
    texts = tokenizer.batch_decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    lengths = (tokens != tokenizer.pad_token_id).sum(-1).float()  # as run_translation.py counts gen_len
    return [text.strip().replace("\r", " ").replace("\n", " ") for text in texts], lengths


# Generation options that count from the decoder input of each `generate` call (or time it), so a search resumed with
# a longer input would not continue as one call does, and stop strings, which end rows without an end token: with
# any of these set, every batch decodes whole.
_NOT_RESUMABLE = (
    "min_new_tokens",
    "begin_suppress_tokens",
    "exponential_decay_length_penalty",
    "max_time",
    "stop_strings",
)


def merged_generation_config(model: PreTrainedModel, kwargs: dict[str, Any]) -> GenerationConfig:
    """The model's generation config with a task's `generate` options written in (what `generate` decodes with)."""
    return exported_generation_config(model, {key: value for key, value in kwargs.items() if key != "synced_gpus"})


def droppable_limit(model: PreTrainedModel, kwargs: dict[str, Any]) -> int | None:
    """The longest decoder sequence (start token included) when greedy search can drop finished rows; else None."""
    config = merged_generation_config(model, kwargs)
    greedy = config.get_generation_mode() == GenerationMode.GREEDY_SEARCH and config.num_return_sequences in (1, None)
    if not greedy or kwargs.get("synced_gpus") or config.eos_token_id is None or not model.config.is_encoder_decoder:
        return None  # sharded ranks must step together; without an end token no row finishes early
    if any(getattr(config, name, None) is not None for name in _NOT_RESUMABLE):
        return None
    return 1 + config.max_new_tokens if config.max_new_tokens is not None else config.max_length


class _EndedShare(StoppingCriteria):
    """Ends a `generate` call once `share` of its rows have produced an end token (after the start token)."""

    def __init__(self, eos: Tensor, share: float) -> None:
        self.eos, self.share = eos, share

    def __call__(self, input_ids: Tensor, scores: Tensor, **kwargs: Any) -> Tensor:
        ended = torch.isin(input_ids[:, 1:], self.eos).any(-1)  # (rows,)
        stop = bool(ended.float().mean() >= self.share)
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


def generate_dropping_finished(
    model: PreTrainedModel, inputs: dict[str, Tensor], kwargs: dict[str, Any], limit: int, encoder_outputs: Any
) -> Tensor:
    """Greedy `generate` that drops the rows that have ended: the same tokens as one call, for fewer row-steps.

    Each call stops once a quarter of its rows have ended; the rest continue in a smaller batch from their tokens
    so far, with the key/value cache and encoder outputs cut to those rows. Every call decodes up to `limit` (the
    absolute length, as one call's), so length-dependent processors (forced end token, minimum length) act alike.
    """
    if encoder_outputs is None:
        encoder_outputs = model.get_encoder()(**inputs)
    config = merged_generation_config(model, kwargs)
    eos = torch.as_tensor(config.eos_token_id, device=inputs["input_ids"].device).view(-1)
    pad = config.pad_token_id if config.pad_token_id is not None else int(eos[0])  # as generate pads
    text_config = model.config.get_text_config(decoder=True)
    cache = EncoderDecoderCache(DynamicCache(config=text_config), DynamicCache(config=text_config))
    options = {**kwargs, "max_new_tokens": None, "max_length": limit, "cache": cache, "return_dict_in_generate": True}
    options["stopping_criteria"] = StoppingCriteriaList([_EndedShare(eos, 0.25)])
    rows = torch.arange(inputs["input_ids"].shape[0], device=eos.device)  # the batch positions still decoding
    out = torch.full((len(rows), limit), pad, dtype=torch.long, device=eos.device)
    longest, decoded = 0, {}
    while True:
        tokens = model.generate(**inputs, **decoded, encoder_outputs=encoder_outputs, **options).sequences
        ends = torch.isin(tokens[:, 1:], eos)  # (rows, generated)
        ended = ends.any(-1)
        done = ended | (tokens.shape[1] >= limit)
        out[rows[done], : tokens.shape[1]] = tokens[done]
        lengths = torch.where(ended, ends.int().argmax(-1) + 2, tokens.shape[1])  # start token and end token
        longest = max(longest, int(lengths[done].max())) if done.any() else longest
        if done.all():
            return out[:, :longest]
        keep = (~done).nonzero().squeeze(1)
        rows = rows[keep]
        cache.batch_select_indices(keep)
        inputs = {key: value[keep] for key, value in inputs.items()}
        encoder_outputs = type(encoder_outputs)(last_hidden_state=encoder_outputs.last_hidden_state[keep])
        decoded = {"decoder_input_ids": tokens[keep], "decoder_attention_mask": torch.ones_like(tokens[keep])}
