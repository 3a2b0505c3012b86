"""Exact resume: Lightning's fit loop corrected, every process's random generators saved, `--ckpt_path=last`."""

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


class FitLoopResume(L.Callback):
    """Two corrections to how Lightning 2.6's fit loop resumes a fit, so that it continues where it stopped.

    The training loader's place: a task's `configure_optimizers` reads `trainer.estimated_stepping_batches` to span
    its learning-rate schedule; with `max_epochs` set, Lightning builds the training loader there to count its
    batches, before the checkpoint's loop state is loaded. The fit loop applies the saved loader state
    (`TrainLoader`, `StreamLoader`: the batches of the epoch consumed) only where it builds the loader, and keeps
    one it already has, so the resumed epoch started again from its first batch (Lightning issue #20550).
    `on_fit_start` runs after `configure_optimizers` and before the restore: the early loader is dropped there, and
    the fit loop builds it again after the restore, as it does when nothing counted the steps first.

    The epoch after a checkpoint written at an epoch's last batch: the fit loop closes that epoch when it resumes,
    but still treats the next one as the epoch it resumed in, so it counts no start of it (and calls no
    `on_train_epoch_start`). A checkpoint written during that epoch then reads as one written after it, and a fit
    resumed from it trained the epoch again from its first batch. `on_train_start` (after the loop closed the epoch)
    lets the next epoch start as a new one.

    Both reach into the fit loop's private state; `tests/test_resume.py` fails if a Lightning release changes it.
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loop = trainer.fit_loop
        if loop._combined_loader is None:
            return
        if loop._data_fetcher is not None:  # an iterator over the early loader (a stream's holds a batch already)
            loop._data_fetcher.teardown()
            loop._data_fetcher = None
        loop._combined_loader = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loop, epochs = trainer.fit_loop, trainer.fit_loop.epoch_progress.current
        if loop.restarted_mid_epoch and epochs.processed == epochs.started:  # the epoch resumed in is closed
            loop.reset_restart_stage()


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
    """The newest `last*.ckpt` of any earlier run: under the logger's folder (`lightning_logs/<task>-<model>/
    version_*/checkpoints/`) or a checkpoint callback's own `dirpath`. Lightning looks for `ckpt_path="last"` only
    in this run's new `version_N` folder, so without this `--ckpt_path=last` would start again from scratch."""
    dirpaths = [getattr(callback, "dirpath", None) for callback in trainer.checkpoint_callbacks]
    return newest_last_checkpoint(getattr(trainer.logger, "root_dir", None), dirpaths)


def newest_last_checkpoint(root: str | Path | None, dirpaths: list[str | None], runs: str = "*") -> str | None:
    """The newest `last*.ckpt` in `root/<runs>/checkpoints/` (a logger's runs) or in one of `dirpaths`, by the time
    its file (a link's target) was written; the path as found, so a link names the run folder that holds it."""
    found = list(Path(root).glob(f"{runs}/checkpoints/last*.ckpt")) if root else []
    for dirpath in dirpaths:
        if dirpath:
            found += Path(dirpath).glob("last*.ckpt")
    found = [path for path in found if path.is_file()]
    return str(max(found, key=lambda path: path.stat().st_mtime)) if found else None
