"""The speed options every task takes: `torch.compile` of the model and gradient (activation) checkpointing."""

import contextlib
from collections.abc import Mapping
from typing import Any, Literal

import lightning as L
import torch
from peft import PeftModel
from torch import nn

from lit_hf.errors import ConfigError

# torch.compile's modes (torch._inductor.list_mode_options(); torch 2.13 adds "lite", which older torch lacks).
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


def check_speed_options(hparams: Mapping[str, Any]) -> None:
    """Raises on a compile mode given without compile=true (it would silently do nothing)."""
    if hparams.get("compile_mode", "default") != "default" and not hparams.get("compile"):
        raise ConfigError(f"compile_mode={hparams['compile_mode']!r} needs compile=true.")


def checkpoint_activations(model: nn.Module, hparams: Mapping[str, Any]) -> None:
    """With `hparams["gradient_checkpointing"]`: each transformer block's activations are recomputed in the backward
    pass instead of kept (Hugging Face's own switch, as `TrainingArguments(gradient_checkpointing=True)`).

    Non-reentrant `torch.utils.checkpoint`: it needs no input that requires grad, so it works under LoRA, where the
    embeddings are frozen, and under `torch.compile`. Blocks only checkpoint in train mode, so evaluation and
    `generate` (with its key-value cache) run as without.
    """
    check_speed_options(hparams)
    if not hparams.get("gradient_checkpointing"):
        return
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise ConfigError(f"{type(base).__name__} does not support gradient_checkpointing; leave it off.")
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # the name since transformers 5.2x; the old one warns
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def compile_model(task: L.LightningModule) -> None:
    """`configure_model` of every task, after `shard_model`: with `compile`, `torch.compile` the task's model in
    place (`nn.Module.compile`), so sharded runs compile the sharded modules and the state dict keeps its keys
    (no `_orig_mod.`): checkpoints and exports are the same as without. Lightning calls this once per stage; the
    model is compiled once."""
    strategy = task._trainer.strategy if task._trainer is not None else None
    if task.hparams.get("gradient_checkpointing") and getattr(strategy, "activation_checkpointing", False):
        raise ConfigError("gradient_checkpointing=true and the fsdp strategy's activation_checkpointing both "
                          "checkpoint every block; keep one.")  # fmt: skip
    if not task.hparams.get("compile") or is_compiled(task.model):
        return
    task.model.compile(mode=task.hparams.get("compile_mode", "default"))


def is_compiled(model: nn.Module) -> bool:
    return getattr(model, "_compiled_call_impl", None) is not None


def eager() -> contextlib.AbstractContextManager:
    """Runs compiled models eagerly, for `generate`: its shapes change with every new token, and a compiled model
    recompiles as they do (8 new tokens of a 2-layer, 32-wide GPT-2: 37 s on this CPU, against 0.01 s eagerly)."""
    if hasattr(torch.compiler, "set_stance"):  # torch >= 2.6
        return torch.compiler.set_stance("force_eager")
    return contextlib.nullcontext()
