"""LoRA through PEFT for any task: wrapping the model, checkpoints of the trained weights only, and the export."""

import copy
import sys
from typing import Any, Literal

import lightning as L
from torch import nn

from lit_hf.errors import ConfigError
from lit_hf.options import LoraOptions

# PEFT's names for what a task's head does; None for heads PEFT has no type for (they pass `modules_to_save`).
PeftTaskType = Literal["CAUSAL_LM", "SEQ_CLS", "SEQ_2_SEQ_LM", "TOKEN_CLS", "QUESTION_ANS"] | None


def apply_peft(
    model: nn.Module, task_type: PeftTaskType, lora: LoraOptions | None, modules_to_save: list[str] | None = None
) -> nn.Module:
    """The model wrapped in LoRA adapters as `lora` says, or unchanged when it is None.

    Only the adapters train, plus the heads PEFT keeps trainable for the task type (SEQ_CLS: the modules named
    `classifier` or `score`) and `modules_to_save`. With `lora.target_modules` None, PEFT's table for the
    architecture decides: GPT-2 `c_attn`, BERT `query` and `value`, T5 `q` and `v`, OPT `q_proj` and `v_proj`.
    """
    if lora is None:
        return model
    from peft import LoraConfig, get_peft_model  # here: importing PEFT costs the CLI's parsing and --help 1.4 s

    config = LoraConfig(
        task_type=task_type,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        modules_to_save=modules_to_save,
    )
    try:
        return get_peft_model(model, config)
    except ValueError as err:  # e.g. an architecture PEFT has no default target modules for
        raise ConfigError(f"LoRA on {type(model).__name__}: {err} Set --model.lora.target_modules.") from err


def keep_trainable(task: L.LightningModule, checkpoint: dict[str, Any]) -> None:
    """`on_save_checkpoint`: with adapters, the checkpoint keeps only the parameters that train."""
    if not is_peft(getattr(task, "model", None)):
        return
    trainable = {name for name, param in task.named_parameters() if param.requires_grad}
    checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}


def restore_frozen(task: L.LightningModule, checkpoint: dict[str, Any]) -> None:
    """`on_load_checkpoint`: an adapter checkpoint gets the frozen weights from the base model the task loaded,
    so the strict load that follows still catches keys that belong to no parameter."""
    if is_peft(getattr(task, "model", None)):
        checkpoint["state_dict"] = {**task.state_dict(), **checkpoint["state_dict"]}


def exportable_model(model: nn.Module, lora: LoraOptions | None) -> Any:
    """What the export saves with `save_pretrained`: the model; with adapters the `PeftModel` (an adapter directory
    for `PeftModel.from_pretrained(base, dir)`) or, with `lora.merge`, a merged copy (plain transformers weights).
    The copy leaves the task's own model wrapped, so training or evaluation can go on."""
    if is_peft(model) and lora is not None and lora.merge:
        return copy.deepcopy(model).merge_and_unload()
    return model


def is_peft(model: Any) -> bool:
    """Whether `model` is wrapped in adapters: a `PeftModel`, which exists only once `apply_peft` imported PEFT."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)
