"""Loading what a task and its data share: the model config and tokenizer (once per process) and the model."""

import copy
import functools
import os
from typing import Any, Literal

import torch
from torch import Tensor
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoTokenizer,
    BaseImageProcessor,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.auto_factory import _BaseAutoModelClass

from lit_hf.errors import ConfigError
from lit_hf.hub import from_hub

DType = Literal["auto", "float32", "float16", "bfloat16"]

T5_FAMILY = ("t5", "mt5", "umt5")  # T5 models: task prefixes; in float16 their activations overflow

# The batch keys a Hugging Face model's forward takes; batches may carry more (`index`, `references`).
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "pixel_values", "labels")


def model_inputs(batch: dict[str, Any], *, labels: bool = True) -> dict[str, Tensor]:
    """The part of a batch the model's forward takes (without `labels` when the task computes the loss itself)."""
    return {k: batch[k] for k in MODEL_INPUTS if k in batch and (labels or k != "labels")}


def _version(name_or_path: str) -> tuple[int, ...]:
    """Modification times of a local folder's files, so a folder rewritten in the same process loads anew."""
    if not os.path.isdir(name_or_path):
        return ()
    return tuple(sorted(entry.stat().st_mtime_ns for entry in os.scandir(name_or_path) if entry.is_file()))


@functools.cache
def _config(name: str, revision: str | None, cache_dir: str | None, trust: bool, version: tuple) -> PretrainedConfig:
    hub = {"revision": revision, "cache_dir": cache_dir, "trust_remote_code": trust}
    return from_hub(AutoConfig.from_pretrained, name, "model config", **hub)


@functools.cache
def _tokenizer(
    name: str, revision: str | None, cache_dir: str | None, trust: bool, version: tuple
) -> PreTrainedTokenizerBase:
    hub = {"revision": revision, "cache_dir": cache_dir, "trust_remote_code": trust}
    return from_hub(AutoTokenizer.from_pretrained, name, "tokenizer", **hub)


@functools.cache
def _image_processor(name: str, revision: str | None, cache_dir: str | None, trust: bool, version: tuple) -> Any:
    hub = {"revision": revision, "cache_dir": cache_dir, "trust_remote_code": trust}
    return from_hub(AutoImageProcessor.from_pretrained, name, "image processor", **hub)


def load_config(
    name_or_path: str, *, revision: str | None = None, cache_dir: str | None = None, trust_remote_code: bool = False
) -> PretrainedConfig:
    """The model config, read once per process; each caller gets its own copy to change (labels, pad token)."""
    config = _config(name_or_path, revision, cache_dir, trust_remote_code, _version(name_or_path))
    return copy.deepcopy(config)


def load_tokenizer(
    name_or_path: str, *, revision: str | None = None, cache_dir: str | None = None, trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    """The tokenizer, loaded once per process and shared by the task and the data module.

    Decoder-only tokenizers without a pad token pad with their end-of-text token (as the tasks tell the model).
    """
    tokenizer = _tokenizer(name_or_path, revision, cache_dir, trust_remote_code, _version(name_or_path))
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_image_processor(
    name_or_path: str, *, revision: str | None = None, cache_dir: str | None = None, trust_remote_code: bool = False
) -> BaseImageProcessor:
    """The image processor (resize, crop, normalize), loaded once per process and shared by the task and the data."""
    return _image_processor(name_or_path, revision, cache_dir, trust_remote_code, _version(name_or_path))


def load_model(
    auto_class: type[_BaseAutoModelClass],
    model_name_or_path: str,
    *,
    config: PretrainedConfig,
    revision: str | None,
    cache_dir: str | None,
    trust_remote_code: bool,
    dtype: DType | None,
    from_scratch: bool,
    config_overrides: str | None = None,
    ignore_mismatched_sizes: bool = False,
) -> PreTrainedModel:
    """Pretrained weights under `config`, or (from_scratch) random weights for it with `config_overrides` applied;
    in train mode either way.

    `ignore_mismatched_sizes` puts newly initialised weights where the checkpoint's have another shape (a new head).
    """
    if not from_scratch:
        hub = {"revision": revision, "cache_dir": cache_dir, "trust_remote_code": trust_remote_code}
        if ignore_mismatched_sizes:
            hub["ignore_mismatched_sizes"] = True
        model = from_hub(auto_class.from_pretrained, model_name_or_path, "model", config=config, dtype=dtype, **hub)
        # from_pretrained returns eval mode, and Lightning keeps each module's mode at the start of fit: without
        # this, pretrained models would fine-tune with dropout off. Lightning switches modes around evaluation.
        return model.train()
    if config_overrides:
        try:
            config.update_from_string(config_overrides)  # "n_embd=64,n_layer=2"
        except ValueError as err:
            raise ConfigError(f"config_overrides {config_overrides!r}: {err}") from err
    torch_dtype = None if dtype in (None, "auto") else getattr(torch, dtype)
    return auto_class.from_config(config, trust_remote_code=trust_remote_code, dtype=torch_dtype)


def fit_embeddings(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Grow the input embeddings to the tokenizer's size; never shrink them (that would drop trained rows)."""
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))


def max_positions(config: Any) -> int | None:
    """The longest input the model's position embeddings allow, or None (no config; ALiBi, rotary without a
    stated limit)."""
    for name in ("max_position_embeddings", "n_positions", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
