"""Evaluation and prediction outputs: back from the processes' shards to dataset order, and into files.

Prediction outputs stream: each process appends its rows to a shard file under the log dir as it goes
(`open_shard`, `append_rows`), and rank zero merges the shards in index order at the end (`write_merged`), so
memory does not grow with the number of examples."""

import json
from array import array
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_warn

from lit_hf.errors import LitHFError


def gather_by_index(rows: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    """Every process's `(index in the set, value)` rows, on every process, sorted by index.

    The way back from `EvalShardSampler`'s shards to dataset order; an index from two processes is an error, since
    whatever was computed from the rows would count that example twice. Holds every row in memory: prediction
    outputs go through `open_shard` / `write_merged` instead.
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
    """The run's log folder (`lightning_logs/version_N`, or `RUN/predict` for a run's checkpoint: `lit_hf.runs`),
    rank 0's on every rank; a collective call, so every rank must make it."""
    return Path(trainer.log_dir or trainer.default_root_dir)


def write_lines(path: Path, lines: Iterable[str]) -> None:
    """One line each, written as they come (an iterator is never held whole)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for line in lines:
            out.write(line + "\n")


def shard_path(folder: Path, name: str, rank: int) -> Path:
    return folder / f".{name}.rank{rank}.jsonl"


def open_shard(trainer: L.Trainer, name: str) -> Path:
    """This process's (emptied) shard file for the output `name`; a collective call, made at epoch start."""
    path = shard_path(log_dir(trainer), name, trainer.global_rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("", encoding="utf-8")  # a shard left by an interrupted run must not be merged again
    return path


def append_rows(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Rows with an `"index"` (position in the split), one json line each."""
    with path.open("a", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_merged(trainer: L.Trainer, name: str, write: Callable[[Iterator[dict[str, Any]]], None]) -> None:
    """Once every process has written its shard of `name`: on rank zero, `write(rows in index order)`, then the
    shards are removed. A collective call, made at epoch end by every process."""
    folder = log_dir(trainer)
    trainer.strategy.barrier()  # every shard complete
    if trainer.is_global_zero:
        paths = [shard_path(folder, name, rank) for rank in range(trainer.world_size)]
        write(merged_rows(paths))
        for path in paths:
            path.unlink()
    trainer.strategy.barrier()


def merged_rows(paths: list[Path]) -> Iterator[dict[str, Any]]:
    """The shards' rows sorted by index, read back one at a time: only (index, shard, offset) per row is held,
    24 bytes, so a shard in any order (longest-first batches) merges without loading it."""
    indices, shards, offsets = array("q"), array("q"), array("q")
    for shard, path in enumerate(paths):
        with path.open("rb") as lines:
            offset = 0
            for line in lines:
                indices.append(json.loads(line)["index"])
                shards.append(shard)
                offsets.append(offset)
                offset += len(line)
    index = np.frombuffer(indices, dtype=np.int64) if indices else np.zeros(0, dtype=np.int64)
    order = np.argsort(index, kind="stable")
    repeated = int((np.diff(index[order]) == 0).sum())
    if repeated:
        raise LitHFError(f"{repeated} examples were predicted on more than one process.")
    if not np.array_equal(index[order], np.arange(len(index))):
        rank_zero_warn(f"Only {len(index)} examples were predicted (limit_*_batches?); written in order.")
    files = [path.open("rb") for path in paths]
    try:
        for i in order.tolist():
            files[shards[i]].seek(offsets[i])
            yield json.loads(files[shards[i]].readline())
    finally:
        for file in files:
            file.close()
