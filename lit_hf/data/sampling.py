"""Data loaders: shuffled for training; for evaluation, each process a disjoint share of the set (no padding, no
duplicates) in the same number of batches."""

import math
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from lit_hf.errors import LitHFError


class EvalShardSampler(DistributedSampler):
    """Process `rank` takes positions rank, rank + N, ... of `order` (default: dataset order), and nothing more.

    Subclassing `DistributedSampler` tells Lightning to keep it instead of inserting its own, which pads every
    process's share to the same length with repeated samples and so skews metrics over the whole set.
    With `batch_size`, it yields this process's share as batches (lists of positions), the same number on every
    process: a sharded (FSDP) forward is a collective, so a process with one batch more would wait forever. The
    share is cut into that many nearly equal batches (none larger than `batch_size`) instead of padding it with
    filler rows, so no metric ever sees a row twice.
    """

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int,
        rank: int,
        order: Sequence[int] | None = None,
        batch_size: int | None = None,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.order = list(order) if order is not None else list(range(len(dataset)))
        self.num_samples = len(self.order[rank::num_replicas])
        self.total_size = len(self.order)
        self.batch_size = batch_size
        self.num_batches = -(-math.ceil(self.total_size / num_replicas) // batch_size) if batch_size else 0
        if batch_size and self.total_size // num_replicas < self.num_batches:
            raise LitHFError(
                f"{self.total_size} evaluation examples on {num_replicas} processes in batches of {batch_size} "
                "cannot give every process the same number of batches; use an eval batch size of 2 or more."
            )

    def __iter__(self) -> Iterator[int] | Iterator[list[int]]:
        shard = self.order[self.rank :: self.num_replicas]
        if not self.batch_size:
            return iter(shard)
        return iter([part.tolist() for part in np.array_split(np.asarray(shard, dtype=np.int64), self.num_batches)])

    def __len__(self) -> int:
        return self.num_batches if self.batch_size else self.num_samples


def collate_columns(collate_fn: Callable[[list[Any]], Any], columns: dict[str, Any]) -> Any:
    """`collate_fn` on the rows of `dataset[positions]` (a dict of columns), as a loader fed whole batches gets."""
    n = len(next(iter(columns.values())))
    return collate_fn([{key: values[i] for key, values in columns.items()} for i in range(n)])


def eval_dataloader(
    dataset: Dataset,
    *,
    batch_size: int,
    collate_fn: Callable[[list[Any]], Any],
    num_workers: int = 0,
    order: Sequence[int] | None = None,
) -> DataLoader:
    """A loader over this process's shard of `dataset` (the whole set when not distributed), in `order`."""
    if dist.is_available() and dist.is_initialized():
        if len(dataset) < dist.get_world_size():  # an empty shard would skip the epoch end where metrics sync
            raise LitHFError(
                f"The evaluation set has {len(dataset)} examples, fewer than the {dist.get_world_size()} processes; "
                "use fewer devices or more evaluation data."
            )
        sampler = EvalShardSampler(dataset, dist.get_world_size(), dist.get_rank(), order, batch_size=batch_size)
        return DataLoader(  # the sampler yields whole batches: batch_size=None
            dataset,
            batch_size=None,
            sampler=sampler,
            collate_fn=partial(collate_columns, collate_fn),
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
        )
    else:
        sampler = order
    return train_dataloader(
        dataset, batch_size=batch_size, collate_fn=collate_fn, num_workers=num_workers, sampler=sampler, shuffle=False
    )


def train_dataloader(
    dataset: Dataset,
    *,
    batch_size: int,
    collate_fn: Callable[[list[Any]], Any],
    num_workers: int = 0,
    sampler: Sampler[int] | Sequence[int] | None = None,
    shuffle: bool = True,
) -> DataLoader:
    """A shuffled training loader, or one in `sampler`'s order (Lightning shards a training loader across processes
    itself; `eval_dataloader` shards its own)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        collate_fn=collate_fn,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


def longest_first(dataset: Any) -> list[int]:
    """Positions by decreasing `input_ids` length (stable): batches with less padding, and the largest first, so a
    batch that does not fit in memory shows at once."""
    lengths = np.asarray(pc.list_value_length(dataset.with_format("arrow")["input_ids"]))
    return np.argsort(-lengths, kind="stable").tolist()
