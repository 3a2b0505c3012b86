"""The speed options every task takes (`SpeedOptions`): `torch.compile` and gradient (activation) checkpointing."""

import contextlib

import torch
from torch import nn

from lit_hf.adapters import is_peft
from lit_hf.errors import ConfigError
from lit_hf.options import SpeedOptions


def checkpoint_activations(model: nn.Module, speed: SpeedOptions) -> None:
    """With `speed.gradient_checkpointing`: each transformer block's activations are recomputed in the backward pass
    instead of kept (Hugging Face's own switch, as `TrainingArguments(gradient_checkpointing=True)`).

    Non-reentrant `torch.utils.checkpoint`: it needs no input that requires grad, so it works under LoRA, where the
    embeddings are frozen, and under `torch.compile`. Blocks only checkpoint in train mode, so evaluation and
    `generate` (with its key-value cache) run as without.
    """
    if not speed.gradient_checkpointing:
        return
    base = model.get_base_model() if is_peft(model) else model
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise ConfigError(f"{type(base).__name__} does not support speed.gradient_checkpointing; leave it off.")
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # the name since transformers 5.2x; the old one warns
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def check_strategy(speed: SpeedOptions, strategy: object) -> None:
    """Raises when the model and the fsdp strategy would both checkpoint every block."""
    if speed.gradient_checkpointing and getattr(strategy, "activation_checkpointing", False):
        raise ConfigError("speed.gradient_checkpointing=true and the fsdp strategy's activation_checkpointing both "
                          "checkpoint every block; keep one.")  # fmt: skip


def compile_model(model: nn.Module, speed: SpeedOptions) -> None:
    """With `speed.compile`, `torch.compile` the model in place (`nn.Module.compile`), after `shard_model`, so
    sharded runs compile the sharded modules and the state dict keeps its keys (no `_orig_mod.`): checkpoints and
    exports are the same as without. Lightning configures the model once per stage; it is compiled once."""
    if speed.compile and not is_compiled(model):
        model.compile(mode=speed.compile_mode)


def is_compiled(model: nn.Module) -> bool:
    return getattr(model, "_compiled_call_impl", None) is not None


def eager() -> contextlib.AbstractContextManager:
    """Runs compiled models eagerly, for `generate`: its shapes change with every new token, and a compiled model
    recompiles as they do (8 new tokens of a 2-layer, 32-wide GPT-2: 37 s on this CPU, against 0.01 s eagerly)."""
    if hasattr(torch.compiler, "set_stance"):  # torch >= 2.6
        return torch.compiler.set_stance("force_eager")
    return contextlib.nullcontext()
