"""Sharded training (`--trainer.strategy=fsdp`): PyTorch FSDP2 `fully_shard` per transformer block, on GPUs or CPUs.

Lightning 2.6's `FSDPStrategy` refuses CPUs ("requires a GPU accelerator"), so lit_hf runs `fsdp` as Lightning's
`ModelParallelStrategy` (FSDP2, which gloo runs too) with every process one data-parallel shard; each task's
`configure_model` calls `shard_model`. FSDP2 parameters are DTensors that keep their full shapes, so
`optim.param_groups` (decay on `p.ndim >= 2`) groups them as on one device.
"""

from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn


class ShardedStrategy(ModelParallelStrategy):
    """FSDP2 over all processes: each block in the model's `_no_split_modules` is one sharded unit, then the rest.

    Args:
        activation_checkpointing: Recompute each block's activations in the backward pass: less memory, ~30% more
            compute.
        save_distributed_checkpoint: Checkpoints as one file per process (a folder) instead of one gathered file.
        reshard_after_forward: Free each block's gathered weights after its forward (ZeRO-3); False keeps them
            until the backward (ZeRO-2: more memory, fewer all-gathers).
    """

    def __init__(
        self,
        activation_checkpointing: bool = False,
        save_distributed_checkpoint: bool = True,
        reshard_after_forward: bool = True,
    ) -> None:
        super().__init__(tensor_parallel_size=1, save_distributed_checkpoint=save_distributed_checkpoint)
        self.activation_checkpointing = activation_checkpointing
        self.reshard_after_forward = reshard_after_forward

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes  # every process a shard; no tensor parallel
        super().setup_environment()

    def full_state_dict(self) -> dict[str, Any]:
        """The whole model's weights on every rank (a collective), for the `huggingface/` export."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def block_classes(model: nn.Module) -> set[type[nn.Module]]:
    """The module classes the model says must not be split (GPT2Block, OPTDecoderLayer, T5Block, BertLayer, ...)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    return {type(m) for m in model.modules() if type(m).__name__ in names}


def shard_model(task: L.LightningModule) -> None:
    """`configure_model` of every task: under `ShardedStrategy`, `fully_shard` each block, then the whole model."""
    strategy = task._trainer.strategy if task._trainer is not None else None
    if not isinstance(strategy, ShardedStrategy) or is_sharded(task.model):
        return
    from torch.distributed.fsdp import fully_shard

    mesh = task.device_mesh["data_parallel"]
    blocks = block_classes(task.model)
    for module in list(task.model.modules()):
        if type(module) in blocks:
            if strategy.activation_checkpointing:
                from torch.distributed._composable import checkpoint

                checkpoint(module)
            fully_shard(module, mesh=mesh, reshard_after_forward=strategy.reshard_after_forward)
    fully_shard(task.model, mesh=mesh, reshard_after_forward=strategy.reshard_after_forward)
    if hasattr(task.model, "generate"):  # `generate` runs the encoder on its own: gather the root's weights for it
        from torch.distributed.fsdp import register_fsdp_forward_method

        register_fsdp_forward_method(task.model, "generate")


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def is_sharded_run(task: L.LightningModule) -> bool:
    """Whether every forward is a collective (so `generate` needs `synced_gpus`)."""
    strategy = task._trainer.strategy if task._trainer is not None else None
    return isinstance(strategy, ShardedStrategy) and torch.distributed.is_initialized()
