"""Loading a model for a task: pretrained weights, or random weights for a config (training from scratch)."""

from typing import Any, Literal

import torch
from transformers import AutoConfig, PreTrainedModel
from transformers.models.auto.auto_factory import _BaseAutoModelClass

from lit_hf.errors import ConfigError
from lit_hf.hub import from_hub

DType = Literal["auto", "float32", "float16", "bfloat16"]


def load_model(
    auto_class: type[_BaseAutoModelClass],
    model_name_or_path: str,
    *,
    config_name: str | None,
    revision: str | None,
    cache_dir: str | None,
    trust_remote_code: bool,
    dtype: DType | None,
    from_scratch: bool,
    config_overrides: str | None,
) -> PreTrainedModel:
    """Pretrained weights, or (from_scratch) random weights for the named config with `config_overrides` applied."""
    hub = {"revision": revision, "cache_dir": cache_dir, "trust_remote_code": trust_remote_code}
    if not from_scratch:
        if config_name:
            config = from_hub(AutoConfig.from_pretrained, config_name, "model config", **hub)
            hub["config"] = config
        return from_hub(auto_class.from_pretrained, model_name_or_path, "model", dtype=dtype, **hub)
    config = from_hub(AutoConfig.from_pretrained, config_name or model_name_or_path, "model config", **hub)
    if config_overrides:
        try:
            config.update_from_string(config_overrides)  # "n_embd=64,n_layer=2"
        except ValueError as err:
            raise ConfigError(f"config_overrides {config_overrides!r}: {err}") from err
    torch_dtype = None if dtype in (None, "auto") else getattr(torch, dtype)
    return auto_class.from_config(config, trust_remote_code=trust_remote_code, dtype=torch_dtype)


def max_positions(config: Any) -> int | None:
    """The longest input the model's position embeddings allow, or None (ALiBi, rotary without a stated limit)."""
    for name in ("max_position_embeddings", "n_positions", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def position_limit(config_name_or_path: str | None, *, revision: str | None, trust_remote_code: bool) -> int | None:
    """`max_positions` of the named model config; None when no config is named (a data module used on its own)."""
    if not config_name_or_path:
        return None
    config = from_hub(
        AutoConfig.from_pretrained,
        config_name_or_path,
        "model config",
        revision=revision,
        trust_remote_code=trust_remote_code,
    )
    return max_positions(config)
