"""AdamW with decoupled decay on matrices only, and a `transformers.get_scheduler` schedule stepped per batch."""

import math
from typing import Any, Literal

import lightning as L
import torch
from torch import nn
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
from transformers import get_scheduler

from lit_hf.errors import ConfigError

SchedulerType = Literal[
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt"
]


def check_optimizer(
    learning_rate: float, weight_decay: float, adam_epsilon: float, warmup_ratio: float, warmup_steps: int
) -> None:
    """Raises for optimizer options out of range when the task is built (torch's AdamW refuses a negative rate only
    when the fit starts, after its log folder is made) and for both warmup options set."""
    values = {"learning_rate": learning_rate, "weight_decay": weight_decay, "adam_epsilon": adam_epsilon}
    for name, value in values.items():
        if not value >= 0:  # NaN fails this too
            raise ConfigError(f"{name} must be 0 or more, got {value}.")
    check_warmup(warmup_ratio, warmup_steps)


def check_warmup(warmup_ratio: float, warmup_steps: int) -> None:
    """Raises when both warmup options are set or either is out of range."""
    if warmup_ratio and warmup_steps:
        raise ConfigError("Set either warmup_ratio or warmup_steps, not both.")
    if not 0.0 <= warmup_ratio < 1.0:
        raise ConfigError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}.")
    if warmup_steps < 0:
        raise ConfigError(f"warmup_steps must be >= 0, got {warmup_steps}.")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Biases and norm weights (all parameters with fewer than 2 dimensions) get no weight decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]


def fused_supported(param: torch.Tensor) -> bool:
    """Whether `torch.optim.AdamW(fused=True)` can update this parameter: a floating-point tensor on a device that
    torch lists as having the fused kernels (CUDA, CPU, MPS, XPU, ...; on CPU in torch 2.13 every float dtype)."""
    return param.is_floating_point() and param.device.type in _get_fused_kernels_supported_devices()


def adamw_with_schedule(
    model: nn.Module,
    *,
    total_steps: int,
    learning_rate: float,
    weight_decay: float,
    adam_epsilon: float,
    warmup_ratio: float,
    warmup_steps: int,
    lr_scheduler_type: SchedulerType,
) -> dict[str, Any]:
    """The dict `LightningModule.configure_optimizers` returns, with the scheduler stepped every optimizer step."""
    groups = param_groups(model, weight_decay)
    # One kernel per step over all parameters where torch has it: the same update as the per-tensor loop.
    fused = all(fused_supported(p) for group in groups for p in group["params"])
    optimizer = torch.optim.AdamW(groups, lr=learning_rate, eps=adam_epsilon, fused=fused or None)
    # A fused optimizer says it unscales fp16 gradients itself, and Lightning then refuses gradient clipping under
    # any mixed precision (bf16 too). Saying no lets the GradScaler unscale before clipping, as for other optimizers.
    optimizer._step_supports_amp_scaling = False
    warmup = warmup_steps or math.ceil(warmup_ratio * total_steps)  # as transformers.TrainingArguments rounds it
    scheduler = get_scheduler(
        lr_scheduler_type, optimizer, num_warmup_steps=warmup, num_training_steps=max(total_steps, 1)
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def configure_adamw(task: L.LightningModule) -> dict[str, Any]:
    """`configure_optimizers` of every task: AdamW on `task.model` from the task's own optimizer options
    (`learning_rate`, `weight_decay`, `adam_epsilon`, `warmup_ratio`, `warmup_steps`, `lr_scheduler_type`)."""
    hp = task.hparams
    return adamw_with_schedule(
        task.model,
        total_steps=int(task.trainer.estimated_stepping_batches),
        learning_rate=hp.learning_rate,
        weight_decay=hp.weight_decay,
        adam_epsilon=hp.adam_epsilon,
        warmup_ratio=hp.warmup_ratio,
        warmup_steps=hp.warmup_steps,
        lr_scheduler_type=hp.lr_scheduler_type,
    )
