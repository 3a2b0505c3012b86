"""Checks the CLI makes before a run starts (devices, `--ckpt_path`, what `predict` needs), and the clean-up of a
run stopped by a user error, so that a mistake costs seconds and leaves nothing behind."""

import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lit_hf.errors import LitHFError, first_line
from lit_hf.trust import check_sharded_checkpoint, unsafe_message

CPU_PROCESSES_PER_CORE = 2  # beyond this, processes mostly wait for a core and each holds a copy of the model

# What a run writes into its log folder before any result: a folder holding only these was left by a failed start.
START_FILES = ("config.yaml", "hparams.yaml", "events.out.tfevents.", "metrics.csv")


def check_devices(accelerator: Any, devices: Any) -> None:
    """More devices than the machine has is refused before any process starts. On CPU each device is a process:
    up to two per core still make progress (the tests run 3 on 2 cores); 64 on 2 cores started, filled the memory
    and hung."""
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    if not isinstance(devices, int) or isinstance(devices, bool) or devices < 1:
        return  # "auto", -1 (all) and lists of ids are Lightning's to check
    kind = str(accelerator or "auto")
    if kind in ("gpu", "cuda") or (kind == "auto" and torch.cuda.is_available()):
        have = torch.cuda.device_count()
        if devices > have:
            raise LitHFError(
                f"--trainer.devices={devices} asks for more devices than this machine's {have} GPUs "
                f"(torch.cuda.device_count()); use --trainer.devices={have} or fewer."
            )
    elif kind in ("cpu", "auto"):
        cores = os.cpu_count() or 1
        if devices > CPU_PROCESSES_PER_CORE * cores:
            raise LitHFError(
                f"--trainer.devices={devices} asks for {devices} CPU processes, more than this machine's {cores} "
                f"CPU cores (os.cpu_count()) can run; use --trainer.devices={cores} or fewer."
            )


def check_predicts(task: type, data: type) -> None:
    """`predict` needs a task with its own `predict_step` and a data module with a `predict_dataloader`."""
    if task.predict_step is L.LightningModule.predict_step:
        raise LitHFError(
            f"{task.__name__} has nothing to predict (it defines no predict_step); use `validate` or `test` for its "
            "metrics, or a task that predicts."
        )
    if data.predict_dataloader is L.LightningDataModule.predict_dataloader:
        raise LitHFError(f"{data.__name__} has no prediction split (no predict_dataloader); use `validate` or `test`.")


def is_local_checkpoint(ckpt_path: Any) -> bool:
    """A path to check here; not given, Lightning's names (`last`, `best`, `hpc`) or remote URLs."""
    return bool(ckpt_path) and str(ckpt_path) not in ("last", "best", "hpc") and "://" not in str(ckpt_path)


def check_checkpoint_file(path: str) -> None:
    if not os.path.exists(path):
        raise LitHFError(f"--ckpt_path {path!r} does not exist; give a .ckpt file a fit wrote, or 'last'.")
    if not os.path.isfile(path):
        raise LitHFError(f"--ckpt_path {path!r} is a directory; give a .ckpt file, e.g. {path}/last.ckpt.")


def incomplete_message(path: str, err: BaseException) -> str:
    if "Weights only load failed" in str(err):
        return unsafe_message(path)
    cause = first_line(err).split(". ")[0]  # torch's zip error goes on for three more sentences
    return (
        f"--ckpt_path {path!r} is not a complete checkpoint ({cause}); it was cut short or is not a Lightning "
        "checkpoint: give another one, e.g. an earlier .ckpt in the same folder."
    )


def checkpoint_hparams(path: str, weights_only: bool = True) -> dict[str, Any]:
    """The hyperparameters saved in a checkpoint, read with `weights_only=True` unless the user said otherwise
    (memory-mapped: the tensors are not read); a missing, truncated or foreign file is a LitHFError. A sharded (FSDP)
    checkpoint folder is only checked as safe to load: Lightning reads its hyperparameters among the shards."""
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, ".metadata")):  # torch.distributed.checkpoint
        if weights_only:
            check_sharded_checkpoint(Path(path))
        return {}
    check_checkpoint_file(path)
    try:
        checkpoint = torch.load(path, weights_only=weights_only, map_location="cpu", mmap=True)
    except Exception as err:  # noqa: BLE001 (zip, pickle and EOF errors all mean the same: not a whole checkpoint)
        raise LitHFError(incomplete_message(path, err)) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise LitHFError(
            f"--ckpt_path {path!r} is not a Lightning checkpoint (no state_dict); give a .ckpt a fit wrote."
        )
    return dict(checkpoint.get("hyper_parameters") or {})


def check_checkpoint_task(path: str, saved: str | None, given: str | None) -> None:
    """A checkpoint restores the task that wrote it; another `--model` would be replaced by it without a word."""
    if saved and given and saved != given:
        raise LitHFError(
            f"--ckpt_path {path!r} is a checkpoint of {saved}, but --model is {given}; "
            f"use --model={saved}, or a checkpoint of {given}."
        )


def new_log_dir(trainer: L.Trainer) -> tuple[Path | None, Path | None]:
    """The run's log folder if it does not exist yet, and its nearest existing ancestor (None, None otherwise)."""
    path = Path(trainer.log_dir) if trainer.log_dir else None
    if path is None or path.exists():
        return None, None
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    return path, ancestor


def remove_if_empty(path: Path | None, ancestor: Path | None) -> None:
    """Removes a log folder that holds only what a run writes at its start, and the empty folders above it."""
    if path is None or not path.is_dir():
        return
    files = [p for p in path.rglob("*") if p.is_file()]
    if any(not p.name.startswith(START_FILES) for p in files):
        return  # something worth keeping (a checkpoint, results) was written
    shutil.rmtree(path, ignore_errors=True)
    parent = path.parent
    while ancestor is not None and parent != ancestor and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent
