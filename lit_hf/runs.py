"""Where a run's outputs go: `lightning_logs/<task>-<model>/version_N`, and `validate`, `test` and `predict` of a
run's checkpoint into that run's folder."""

import os
import re
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.fabric.loggers.tensorboard import _TENSORBOARD_AVAILABLE, _TENSORBOARDX_AVAILABLE
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

from lit_hf import checks
from lit_hf.families import FAMILIES, family_of, load
from lit_hf.resume import newest_last_checkpoint

EVALUATIONS = ("validate", "test", "predict")


def checkpoint_run(subcommand: str | None, trainer: Any, ckpt_path: Any) -> Path | None:
    """The run folder (`lightning_logs/<task>-<model>/version_N`) holding `--ckpt_path` as `checkpoints/*.ckpt`,
    where `validate`, `test` and `predict` of it write; None for a fit, a hub model, a checkpoint elsewhere, or when
    the user chose the place (`--trainer.logger`, `--trainer.default_root_dir`), which wins. `trainer`: the config's
    Namespace."""
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
    return default_logger_class()(save_dir=run, name="", version=free_name(run, subcommand))


def named_logger(trainer: Namespace, model: Namespace) -> Logger | None:
    """Lightning's default logger with the run's name (`run_name`): runs go to `lightning_logs/<task>-<model>/
    version_N` under `--trainer.default_root_dir` (or the working directory). None when the user chose a logger
    (`--trainer.logger`, its `name` included), which wins. Every process derives the same name from the config;
    the version is numbered as Lightning numbers it (rank 0's is broadcast, a SLURM job's id where there is one)."""
    if trainer.get("logger") not in (None, True):
        return None
    return default_logger_class()(save_dir=log_root(trainer), name=run_name(model), version=SLURMEnvironment.job_id())


def default_logger_class() -> type[Logger]:
    """TensorBoard's logger where it is installed, else the CSV one, as Lightning picks its default."""
    return TensorBoardLogger if _TENSORBOARD_AVAILABLE or _TENSORBOARDX_AVAILABLE else CSVLogger


def run_name(model: Namespace) -> str:
    """`<task>-<model>` for the config's `--model`: the task's family (`causal_lm`; in a family of several tasks the
    task's own name, `translation`), and the last part of `model_name_or_path` (`gpt2` for `openai-community/gpt2`,
    `byte-gpt2` for a from-scratch config folder), with anything but letters, digits, `.`, `-`, `_` as `_`."""
    source = str(model.init_args.get("model_name_or_path") or "model").rstrip("/\\")
    last = re.sub(r"[^\w.-]+", "_", re.split(r"[/\\]", source)[-1])
    return f"{task_name(load(model.class_path))}-{last}"


def task_name(task: type) -> str:
    """The family's name (`lit_hf.families`), or, where a family has several tasks or `task` is in none, the class's
    name without `Task` in snake case (`TranslationTask`: `translation`)."""
    family = family_of(task)
    if family is not None and len(FAMILIES[family].tasks) == 1:
        return family
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", task.__name__.removesuffix("Task")).lower()


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
    runs = Path(log_root(trainer), run_name(config.model))
    return newest_last_checkpoint(runs, callback_dirpaths(trainer.get("callbacks")))


def log_root(trainer: Namespace) -> str:
    """`lightning_logs` under `--trainer.default_root_dir` (the working directory when not given), where Lightning's
    default logger keeps its runs."""
    root = str(trainer.get("default_root_dir") or os.getcwd())
    return os.path.join(root if "://" in root else os.path.expanduser(root), "lightning_logs")


def older_runs_last(runs: Path) -> str | None:
    """The newest `last*.ckpt` of a run folder from before runs were named (`lightning_logs/version_N`, beside the
    named folder `runs`), which `--ckpt_path=last` no longer takes."""
    return newest_last_checkpoint(runs.parent, [], runs="version_*")


def callback_dirpaths(callbacks: Any) -> list[str | None]:
    """The `dirpath` of each callback the config builds (a `ModelCheckpoint` of one's own keeps `last.ckpt` there)."""
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks] if callbacks else []
    args = [callback.get("init_args") for callback in callbacks if isinstance(callback, Namespace)]
    return [str(arg.dirpath) for arg in args if isinstance(arg, Namespace) and arg.get("dirpath")]
