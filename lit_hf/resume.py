"""Exact resume: every process's random number generators in the checkpoint, and `--ckpt_path=last` across runs."""

import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_warn


class RandomState(L.Callback):
    """Saves the random number generators of every process (torch, CUDA, numpy, Python) in each checkpoint, and
    restores this process's before the first training batch of a resumed fit, so dropout continues its stream.

    Lightning restores none of them. They are restored at the first batch rather than at load time because
    Lightning's start-up between the two is not the same as the run that saved them.
    """

    def __init__(self) -> None:
        self._pending: list[dict[str, Any]] | None = None

    def state_dict(self) -> dict[str, Any]:
        states = random_states()
        if dist.is_available() and dist.is_initialized():  # every process saves a checkpoint's contents
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, states)
            return {"processes": gathered}
        return {"processes": [states]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict["processes"]

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._pending is None:
            return
        if len(self._pending) == trainer.world_size:
            set_random_states(self._pending[trainer.global_rank])
        else:
            rank_zero_warn(
                f"The checkpoint holds random states of {len(self._pending)} processes, this run has "
                f"{trainer.world_size}: random streams (dropout) continue from this run's seed instead."
            )
        self._pending = None


def random_states() -> dict[str, Any]:
    """This process's generator states as tensors, lists and numbers (what `torch.load(weights_only=True)` reads)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, state, python_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
        "python": [version, list(state), python_gauss],
    }


def set_random_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))


def last_checkpoint(trainer: L.Trainer) -> str | None:
    """The newest `last*.ckpt` of any earlier run: under the logger's folder (`lightning_logs/version_*/checkpoints/`)
    or a checkpoint callback's own `dirpath`. Lightning looks for `ckpt_path="last"` only in this run's new
    `version_N` folder, so without this `--ckpt_path=last` would start again from scratch."""
    root = getattr(trainer.logger, "root_dir", None)
    found = list(Path(root).glob("*/checkpoints/last*.ckpt")) if root else []
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "dirpath", None):
            found += Path(callback.dirpath).glob("last*.ckpt")
    found = [path for path in found if path.is_file()]
    return str(max(found, key=lambda path: path.stat().st_mtime)) if found else None
