"""LoRA through PEFT for any task: wrapping the model, checkpoints of the trained weights only, and the export."""

import copy
from collections.abc import Mapping
from typing import Any, Literal

import lightning as L
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from lit_hf.errors import ConfigError

PeftMethod = Literal["lora"]

# PEFT's names for what a task's head does; None for heads PEFT has no type for (they pass `modules_to_save`).
PeftTaskType = Literal["CAUSAL_LM", "SEQ_CLS", "SEQ_2_SEQ_LM", "TOKEN_CLS", "QUESTION_ANS"] | None


def apply_peft(
    model: nn.Module, task_type: PeftTaskType, hparams: Mapping[str, Any], modules_to_save: list[str] | None = None
) -> nn.Module:
    """The model wrapped in LoRA adapters when `hparams["peft"] == "lora"`, else the model unchanged.

    Reads the task options `peft`, `lora_r`, `lora_alpha`, `lora_dropout`, `lora_target_modules`, `merge_adapters`
    (and `from_scratch`). Only the adapters train, plus the heads PEFT keeps trainable for the task type (SEQ_CLS:
    the modules named `classifier` or `score`) and `modules_to_save`. With `lora_target_modules` None, PEFT's table
    for the architecture decides: GPT-2 `c_attn`, BERT `query` and `value`, T5 `q` and `v`, OPT `q_proj` and `v_proj`.
    """
    if hparams.get("peft") is None:
        if hparams.get("merge_adapters"):
            raise ConfigError("merge_adapters=true merges LoRA adapters, so it needs peft=lora.")
        return model
    check_lora(hparams)
    config = LoraConfig(
        task_type=task_type,
        r=hparams["lora_r"],
        lora_alpha=hparams["lora_alpha"],
        lora_dropout=hparams["lora_dropout"],
        target_modules=hparams["lora_target_modules"],
        modules_to_save=modules_to_save,
    )
    try:
        return get_peft_model(model, config)
    except ValueError as err:  # e.g. an architecture PEFT has no default target modules for
        raise ConfigError(f"LoRA on {type(model).__name__}: {err} Set --model.lora_target_modules.") from err


def check_lora(hparams: Mapping[str, Any]) -> None:
    """Raises on LoRA options that cannot work together."""
    if hparams.get("from_scratch"):
        # Checkpoints hold the adapters only; random base weights could not be rebuilt when they are loaded.
        raise ConfigError("peft=lora trains adapters on pretrained weights; it cannot be combined with from_scratch.")
    if hparams["lora_r"] <= 0:
        raise ConfigError(f"lora_r must be a positive rank, got {hparams['lora_r']}.")
    if not 0.0 <= hparams["lora_dropout"] < 1.0:
        raise ConfigError(f"lora_dropout must be in [0, 1), got {hparams['lora_dropout']}.")
    if hparams["lora_target_modules"] == []:
        raise ConfigError("lora_target_modules is empty; leave it unset for PEFT's default for the architecture.")


def keep_trainable(task: L.LightningModule, checkpoint: dict[str, Any]) -> None:
    """`on_save_checkpoint`: with adapters, the checkpoint keeps only the parameters that train."""
    if not isinstance(getattr(task, "model", None), PeftModel):
        return
    trainable = {name for name, param in task.named_parameters() if param.requires_grad}
    checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}


def restore_frozen(task: L.LightningModule, checkpoint: dict[str, Any]) -> None:
    """`on_load_checkpoint`: an adapter checkpoint gets the frozen weights from the base model the task loaded,
    so the strict load that follows still catches keys that belong to no parameter."""
    if isinstance(getattr(task, "model", None), PeftModel):
        checkpoint["state_dict"] = {**task.state_dict(), **checkpoint["state_dict"]}


def exportable_model(task: L.LightningModule) -> Any:
    """What the export saves with `save_pretrained`: the task's model; with adapters the `PeftModel` (an adapter
    directory for `PeftModel.from_pretrained(base, dir)`) or, with `merge_adapters`, a merged copy (plain
    transformers weights). The copy leaves the task's own model wrapped, so training or evaluation can go on."""
    model = getattr(task, "model", None)
    if isinstance(model, PeftModel) and task.hparams.get("merge_adapters"):
        return copy.deepcopy(model).merge_and_unload()
    return model
