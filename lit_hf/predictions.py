"""Evaluation and prediction outputs: back from the processes' shards to dataset order, and into files."""

from pathlib import Path
from typing import Any

import lightning as L
import torch.distributed as dist

from lit_hf.errors import LitHFError


def gather_by_index(rows: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    """Every process's `(index in the set, value)` rows, on every process, sorted by index.

    The way back from `EvalShardSampler`'s shards to dataset order; an index from two processes is an error, since
    whatever was computed from the rows would count that example twice.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        shards: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(shards, rows)
        rows = [row for shard in shards for row in shard]
    rows = sorted(rows, key=lambda row: row[0])
    distinct = len({index for index, _ in rows})
    if distinct != len(rows):
        raise LitHFError(f"{len(rows) - distinct} examples were evaluated on more than one process.")
    return rows


def log_dir(trainer: L.Trainer) -> Path:
    """The run's log folder (`lightning_logs/version_N`); a collective call, so every rank must make it."""
    return Path(trainer.log_dir or trainer.default_root_dir)


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
