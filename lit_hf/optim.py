"""AdamW with decoupled decay on matrices only, and a `transformers.get_scheduler` schedule stepped per batch."""

import math
from typing import Any

import torch
from torch import nn
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

from lit_hf.options import OptimOptions


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


def adamw_with_schedule(model: nn.Module, optim: OptimOptions, total_steps: int) -> dict[str, Any]:
    """The dict `LightningModule.configure_optimizers` returns, with the scheduler stepped every optimizer step."""
    groups = param_groups(model, optim.weight_decay)
    # One kernel per step over all parameters where torch has it: the same update as the per-tensor loop.
    fused = all(fused_supported(p) for group in groups for p in group["params"])
    optimizer = torch.optim.AdamW(groups, lr=optim.learning_rate, eps=optim.adam_epsilon, fused=fused or None)
    # A fused optimizer says it unscales fp16 gradients itself, and Lightning then refuses gradient clipping under
    # any mixed precision (bf16 too). Saying no lets the GradScaler unscale before clipping, as for other optimizers.
    optimizer._step_supports_amp_scaling = False
    warmup = optim.warmup_steps or math.ceil(optim.warmup_ratio * total_steps)  # as TrainingArguments rounds it
    from transformers import get_scheduler  # here: its module imports PEFT, 1 s of every --help and parse

    scheduler = get_scheduler(
        optim.lr_scheduler_type, optimizer, num_warmup_steps=warmup, num_training_steps=max(total_steps, 1)
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
