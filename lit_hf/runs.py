"""Where a run's outputs go: `validate`, `test` and `predict` of a run's checkpoint write into that run's folder."""

import os
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.fabric.loggers.tensorboard import _TENSORBOARD_AVAILABLE, _TENSORBOARDX_AVAILABLE
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

from lit_hf import checks
from lit_hf.resume import newest_last_checkpoint

EVALUATIONS = ("validate", "test", "predict")


def checkpoint_run(subcommand: str | None, trainer: Any, ckpt_path: Any) -> Path | None:
    """The run folder (`lightning_logs/version_N`) holding `--ckpt_path` as `checkpoints/*.ckpt`, where `validate`,
    `test` and `predict` of it write; None for a fit, a hub model, a checkpoint elsewhere, or when the user chose
    the place (`--trainer.logger`, `--trainer.default_root_dir`), which wins. `trainer`: the config's Namespace."""
    if subcommand not in EVALUATIONS or not checks.is_local_checkpoint(ckpt_path):
        return None
    if trainer.get("logger") not in (None, True) or trainer.get("default_root_dir") is not None:
        return None
    path = Path(str(ckpt_path)).expanduser().absolute()
    return path.parent.parent if path.parent.name == "checkpoints" and path.is_file() else None


def free_name(folder: Path, name: str) -> str:
    """`name`, or `name-1`, `name-2`... : the first that `folder` does not hold, so no earlier output is touched."""
    chosen, n = name, 0
    while (folder / chosen).exists():
        n += 1
        chosen = f"{name}-{n}"
    return chosen


def run_logger(run: Path, subcommand: str) -> Logger:
    """Lightning's default logger, writing into `run/<subcommand>` (numbered if taken). Each process picks a name;
    rank 0's is the one used, since `trainer.log_dir` (where lit_hf writes) is broadcast from it, and only rank 0
    writes the logger's own files."""
    logger = TensorBoardLogger if _TENSORBOARD_AVAILABLE or _TENSORBOARDX_AVAILABLE else CSVLogger
    return logger(save_dir=run, name="", version=free_name(run, subcommand))


def last_to_evaluate(subcommand: str | None, config: Namespace) -> str | None:
    """What `validate`, `test` or `predict --ckpt_path=last` names under Lightning's default logger, found from the
    config before anything is built (`resume.last_checkpoint` finds the same from the trainer), so the checkpoint is
    read and its run folder written to as an explicit `--ckpt_path RUN/checkpoints/last.ckpt` is. None otherwise:
    a fit resumes from what the trainer finds, and a logger of the user's own is searched once it is built."""
    if subcommand not in EVALUATIONS or config.get("ckpt_path") != "last":
        return None
    trainer = config.trainer
    if trainer.get("logger") not in (None, True):
        return None
    return newest_last_checkpoint(log_root(trainer), callback_dirpaths(trainer.get("callbacks")))


def log_root(trainer: Namespace) -> Path:
    """The folder Lightning's default logger numbers its runs in: `lightning_logs` under `--trainer.default_root_dir`
    (the working directory when not given)."""
    return Path(trainer.get("default_root_dir") or os.getcwd()).expanduser() / "lightning_logs"


def callback_dirpaths(callbacks: Any) -> list[str | None]:
    """The `dirpath` of each callback the config builds (a `ModelCheckpoint` of one's own keeps `last.ckpt` there)."""
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks] if callbacks else []
    args = [callback.get("init_args") for callback in callbacks if isinstance(callback, Namespace)]
    return [str(arg.dirpath) for arg in args if isinstance(arg, Namespace) and arg.get("dirpath")]
