"""Data loaders: shuffled for training; for evaluation, each process a disjoint share of the set (no padding, no
duplicates)."""

from collections.abc import Callable, Iterator, Sequence
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
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, order: Sequence[int] | None = None) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.order = list(order) if order is not None else list(range(len(dataset)))
        self.num_samples = len(self.order[rank::num_replicas])
        self.total_size = len(self.order)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples


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
        sampler = EvalShardSampler(dataset, dist.get_world_size(), dist.get_rank(), order)
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
