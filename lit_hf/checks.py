"""Checks the CLI makes before a run starts (devices, `--ckpt_path`, what `predict` needs), and the clean-up of a
run stopped by a user error, so that a mistake costs seconds and leaves nothing behind."""

import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lit_hf import families
from lit_hf.adapters import restore_frozen
from lit_hf.errors import ConfigError, LitHFError, first_line
from lit_hf.trust import check_sharded_checkpoint, unsafe_message

CPU_PROCESSES_PER_CORE = 2  # beyond this, processes mostly wait for a core and each holds a copy of the model

# What a run writes into its log folder before any result: a folder holding only these was left by a failed start.
START_FILES = ("config.yaml", "hparams.yaml", "events.out.tfevents.", "metrics.csv")


# The least value of each Trainer count or interval, and what that value means. Lightning accepts some values below
# these and fails later or never ends (accumulate_grad_batches=0, val_check_interval=0), and refuses others with a
# traceback from inside the Trainer.
TRAINER_MINIMUMS = {
    "max_epochs": (-1, "-1 trains without an epoch limit"),
    "max_steps": (-1, "-1 sets no step limit"),
    "min_epochs": (0, "0 sets no minimum"),
    "min_steps": (0, "0 sets no minimum"),
    "accumulate_grad_batches": (1, "1 steps the optimizer after every batch"),
    "check_val_every_n_epoch": (1, "1 validates every epoch; unset, only val_check_interval decides"),
    "log_every_n_steps": (0, "0 logs no training steps"),
    "num_sanity_val_steps": (-1, "-1 checks every validation batch before training, 0 none"),
    "num_nodes": (1, "1 is this machine alone"),
    "reload_dataloaders_every_n_epochs": (0, "0 never reloads them"),
}
FRACTIONS = (
    "limit_train_batches",
    "limit_val_batches",
    "limit_test_batches",
    "limit_predict_batches",
    "overfit_batches",
)


def check_trainer(trainer: Any) -> None:
    """Counts, intervals and fractions of the Trainer out of range, refused in one line before anything is built."""
    for name, (least, meaning) in TRAINER_MINIMUMS.items():
        value = trainer.get(name)
        if _is_int(value) and value < least:
            raise ConfigError(f"--trainer.{name}={value} is out of range: it takes {least} or more ({meaning}).")
    for name in FRACTIONS:
        value = trainer.get(name)
        if _is_number(value) and (value < 0 or _broken_fraction(value)):
            raise ConfigError(
                f"--trainer.{name}={value} is out of range: give a number of batches (0 or more) or a fraction of "
                "them in [0.0, 1.0]."
            )
    interval = trainer.get("val_check_interval")
    if _is_number(interval) and (interval <= 0 or _broken_fraction(interval)):
        raise ConfigError(
            f"--trainer.val_check_interval={interval} is out of range: give a number of training batches (1 or "
            "more) or a fraction of an epoch in (0.0, 1.0]."
        )
    clip = trainer.get("gradient_clip_val")
    if _is_number(clip) and not clip >= 0:
        raise ConfigError(
            f"--trainer.gradient_clip_val={clip} is out of range: clip at a value above 0, or leave it unset."
        )


def _broken_fraction(value: float) -> bool:
    """A float above 1 that is no whole number of batches (Lightning takes 2.0 as 2 batches, and 1.5 as nothing)."""
    return isinstance(value, float) and value > 1 and value % 1 != 0


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, float) or _is_int(value)


def check_devices(accelerator: Any, devices: Any) -> None:
    """More devices than the machine has is refused before any process starts. On CPU each device is a process:
    up to two per core still make progress (the tests run 3 on 2 cores); 64 on 2 cores started, filled the memory
    and hung."""
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if devices == [] or (_is_int(devices) and (devices == 0 or devices < -1)):
        raise ConfigError(
            f"--trainer.devices={devices} runs on no device: give a number of devices (1 or more), -1 for all of "
            "them, or a list of device ids."
        )
    if not _is_int(devices) or devices < 1:
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


def check_output_dirs(trainer: Any) -> None:
    """Every folder a run writes to must be a folder, or missing below a folder, that this process can write to:
    found before the run makes any folder (Lightning makes them at its start, with a traceback when it cannot)."""
    for option, path in output_dirs(trainer):
        check_output_dir(option, path)


def check_output_dir(option: str, path: str) -> None:
    """`path` (what `option` gave) is a folder, or missing below a folder, that this process can write to."""
    if "://" in str(path):
        return  # remote storage: fsspec's to check
    existing = Path(path).expanduser().absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise LitHFError(f"{option} {str(path)!r}: {existing} is a file, not a folder; give a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):  # also false on a read-only file system, even for root
        raise LitHFError(
            f"{option} {str(path)!r}: {existing} cannot be written to (read-only, or not yours); give a folder "
            "you can write to."
        )


def output_dirs(trainer: Any) -> list[tuple[str, str]]:
    """(option, folder) for the default root (the working directory when unset) and the `dirpath` or `save_dir`
    of each configured callback and logger."""
    found = [("--trainer.default_root_dir", trainer.get("default_root_dir") or os.getcwd())]
    for key in ("callbacks", "logger"):
        entries = trainer.get(key)
        for entry in entries if isinstance(entries, list) else [entries]:
            init_args = getattr(entry, "init_args", None)
            for name in ("dirpath", "save_dir"):
                if init_args is not None and init_args.get(name):
                    found.append((f"--trainer.{key} {entry.class_path.rpartition('.')[2]}'s {name}", init_args[name]))
    return found


def check_vocabulary(tokens: int, embeddings: int, tokenizer_name: str) -> None:
    """Refuses a tokenizer with far fewer tokens than the model has embeddings: under 256 (not even bytes) and under
    a tenth of the model's. transformers 5's `BertTokenizer(vocab_file=...)` builds 5 tokens from a full vocab.txt,
    and such a tokenizer trains without an error, on text that is almost all `[UNK]`. (A larger tokenizer is fine:
    the embeddings grow to it.)"""
    if tokens < 256 and tokens * 10 < embeddings:
        raise LitHFError(
            f"The tokenizer from {tokenizer_name!r} has {tokens} tokens for a model with {embeddings} embeddings: "
            "it is not the model's vocabulary (raw vocabulary files read by a tokenizer class's constructor give "
            "such a tokenizer); give the model's tokenizer folder, made as docs/from-hf-scripts.md shows."
        )


def check_family(task: type, data: type) -> None:
    """A task runs on a data module of its own family (lit_hf/families.py); a class that is no family's (a user's
    own) is not checked here."""
    task_family, data_family = families.family_of(task), families.family_of(data)
    if task_family and data_family and task_family != data_family:
        own = ", ".join(families.short(path) for path in families.FAMILIES[task_family].data)
        raise ConfigError(
            f"--data={data.__name__} is a {data_family} data module and --model={task.__name__} a {task_family} "
            f"task; give the data module of the task's family ({own})."
        )


def check_predicts(task: type, data: type) -> None:
    """`predict` needs a task with its own `predict_step` and a data module with a `predict_dataloader`; the way out
    names the classes of the same family that have them."""
    family = families.FAMILIES.get(families.family_of(task) or families.family_of(data) or "")
    if task.predict_step is L.LightningModule.predict_step:
        others = [path for path in (family.tasks if family else ()) if _predicts(families.load(path))]
        raise LitHFError(
            f"{task.__name__} has nothing to predict (it defines no predict_step); use `validate` or `test` for its "
            "metrics, or a task that predicts"
            + (f" ({', '.join(families.short(path) for path in others)})." if others else ".")
        )
    if data.predict_dataloader is L.LightningDataModule.predict_dataloader:
        raise LitHFError(f"{data.__name__} has no prediction split (no predict_dataloader); use `validate` or `test`.")


def _predicts(task: type) -> bool:
    return task.predict_step is not L.LightningModule.predict_step


def is_local_checkpoint(ckpt_path: Any) -> bool:
    """A path to check here; not given, Lightning's names (`last`, `best`, `hpc`) or remote URLs."""
    return bool(ckpt_path) and str(ckpt_path) not in ("last", "best", "hpc") and "://" not in str(ckpt_path)


def check_checkpoint_file(path: str) -> None:
    if not os.path.exists(path):
        raise LitHFError(f"--ckpt_path {path!r} does not exist; give a .ckpt file a fit wrote, or 'last'.")
    if not os.path.isfile(path):  # e.g. a run's version_N folder: its newest checkpoint is the likely meaning
        found = sorted([*Path(path).glob("*.ckpt"), *Path(path).glob("checkpoints/*.ckpt")], key=os.path.getmtime)
        example = found[-1] if found else Path(path) / "last.ckpt"
        raise LitHFError(f"--ckpt_path {path!r} is a directory; give a .ckpt file, e.g. {example}.")


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
    return dict(read_checkpoint(path, weights_only).get("hyper_parameters") or {})


def read_checkpoint(path: str, weights_only: bool = True) -> dict[str, Any]:
    """A checkpoint file read with `weights_only=True` (unless the user said otherwise), memory-mapped (its tensors
    are not read until used); a missing, truncated or foreign file is a LitHFError."""
    check_checkpoint_file(path)
    try:
        checkpoint = torch.load(path, weights_only=weights_only, map_location="cpu", mmap=True)
    except Exception as err:  # (zip, pickle and EOF errors all mean the same: not a whole checkpoint)
        raise LitHFError(incomplete_message(path, err)) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise LitHFError(
            f"--ckpt_path {path!r} is not a Lightning checkpoint (no state_dict); give a .ckpt a fit wrote."
        )
    return checkpoint


def check_checkpoint_task(path: str, saved: str | None, given: str | None) -> None:
    """A checkpoint restores the task that wrote it; another `--model` would be replaced by it without a word."""
    if saved and given and saved != given:
        raise LitHFError(
            f"--ckpt_path {path!r} is a checkpoint of {saved}, but --model is {given}; "
            f"use --model={saved}, or a checkpoint of {given}."
        )


def check_checkpoint_weights(path: str, task: torch.nn.Module, weights_only: bool = True) -> None:
    """The weights in a checkpoint file must fit the task as built: the same names and shapes that Lightning's strict
    load will ask for (a checkpoint with adapters holds the trained weights only; the frozen ones come from the
    model). Else the checkpoint is of another model, and the load fails with a traceback of every tensor."""
    checkpoint = read_checkpoint(path, weights_only)  # `--ckpt_path=last` finds a file no one has checked yet
    loaded = {"state_dict": dict(checkpoint["state_dict"] or {})}
    restore_frozen(task, loaded)
    saved, own = loaded["state_dict"], task.state_dict()
    problems = [
        f"{key} is {list(saved[key].shape)} there and {list(own[key].shape)} in the model"
        for key in saved
        if key in own and saved[key].shape != own[key].shape
    ]
    problems += [f"{key} is not in the model" for key in saved if key not in own]
    problems += [f"{key} of the model is missing" for key in own if key not in saved]
    if problems:
        trained = (checkpoint.get("hyper_parameters") or {}).get("model_name_or_path")
        raise LitHFError(
            f"--ckpt_path {path!r} holds the weights of another model than {task.hparams.get('model_name_or_path')!r}"
            f" ({len(problems)} differ, e.g. {problems[0]}); give the model it was trained from"
            + (f" ({trained!r})" if trained else "")
            + ", or a checkpoint of this one."
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
