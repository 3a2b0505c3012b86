"""Data loaders: for training, one seeded global order sliced across processes and resumable mid-epoch; for
evaluation, each process a disjoint share of the set (no padding, no duplicates) in the same number of batches."""

import math
import os
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from transformers.trainer_pt_utils import get_length_grouped_indices

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


class TrainSampler(DistributedSampler):
    """One seeded order of the training set per epoch, cut into global batches; each process takes its slice.

    With N processes, per-process batch B and A accumulated batches, a global batch (one optimizer step) holds
    G = N * B * A examples: the order's global batch i is `order[i*G:(i+1)*G]`, its micro-batch m the N * B
    examples from `i*G + m*N*B`, and process r takes the r-th B of those. So N processes with batch B see exactly
    the batches of 1 process with batch N * B. The order is a random subset of `G * (len(dataset) // G)` examples:
    the remainder (fewer than G, different every epoch) is left out on 1 and N processes alike, since splitting it
    would give processes unequal batches and DDP averages per-process means. With `lengths`, each global batch
    holds similar lengths (transformers' length-grouped order, computed with the global batch size).

    The order depends only on `seed + epoch` (Lightning calls `set_epoch`, also when it resumes).
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        num_replicas: int,
        rank: int,
        seed: int,
        accumulate: int = 1,
        lengths: Sequence[int] | None = None,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.batch_size, self.lengths = batch_size, lengths
        self.global_batch = num_replicas * batch_size * accumulate
        steps = len(dataset) // self.global_batch
        if steps == 0:
            raise LitHFError(
                f"The training set has {len(dataset)} examples, fewer than one optimizer step's {self.global_batch} "
                f"({num_replicas} processes x batch_size {batch_size} x accumulate_grad_batches {accumulate}); "
                "use a smaller batch_size or more training data."
            )
        self.total_size = steps * self.global_batch
        self.num_samples = self.total_size // num_replicas
        self.skip = 0  # examples of this epoch (all processes) the next iteration leaves out: a resumed fit

    def global_order(self) -> list[int]:
        """This epoch's order of `total_size` dataset positions, the same on every process."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        kept = torch.randperm(len(self.dataset), generator=generator)[: self.total_size].tolist()
        if self.lengths is None:
            return kept
        grouped = get_length_grouped_indices([self.lengths[i] for i in kept], self.global_batch, generator=generator)
        return [kept[i] for i in grouped]

    def __iter__(self) -> Iterator[int]:
        mine = torch.tensor(self.global_order()).view(-1, self.num_replicas, self.batch_size)[:, self.rank]
        return iter(mine[self.skip // self.micro_batch :].flatten().tolist())

    @property
    def micro_batch(self) -> int:
        """Examples per batch on all processes together."""
        return self.num_replicas * self.batch_size


class TrainLoader(DataLoader):
    """A `DataLoader` over a `TrainSampler` that Lightning saves in checkpoints and restores (it has `state_dict`),
    so a fit resumed mid-epoch continues with the next batch instead of the epoch's first."""

    def __iter__(self) -> Iterator[Any]:
        # A generator: this runs at the first batch, after Lightning's `set_epoch`.
        sampler: TrainSampler = self.sampler
        epoch, seen = getattr(self, "_resume", None) or (sampler.epoch, 0)
        self._resume = None
        sampler.skip = self._seen = seen // sampler.micro_batch * sampler.micro_batch if epoch == sampler.epoch else 0
        if hasattr(self.collate_fn, "set_epoch"):  # a collator whose randomness follows the epoch (image crops)
            self.collate_fn.set_epoch(sampler.epoch)
        for batch in super().__iter__():
            self._seen += sampler.micro_batch
            yield batch

    def state_dict(self) -> dict[str, int]:
        """Epoch, seed, and the examples of the epoch all processes have consumed (counted as batches come out, so
        worker prefetching does not count)."""
        return {"epoch": self.sampler.epoch, "seed": self.sampler.seed, "seen": getattr(self, "_seen", 0)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.seed = state["seed"]  # the order of the run that saved it, whatever seed this run drew
        self.sampler.set_epoch(state["epoch"])
        self._resume = (state["epoch"], state["seen"])


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
    return DataLoader(dataset, sampler=sampler, **loader_options(batch_size, collate_fn, num_workers))


def train_dataloader(
    dataset: Dataset,
    *,
    batch_size: int,
    collate_fn: Callable[[list[Any]], Any],
    num_workers: int = 0,
    accumulate: int = 1,
    lengths: Sequence[int] | None = None,
    seed: int | None = None,
) -> TrainLoader:
    """The training loader of every family: this process's slices of one global order (`TrainSampler`).

    `accumulate` is the trainer's `accumulate_grad_batches`; `lengths` (per example) groups similar lengths;
    `seed` defaults to the run's `seed_everything` seed (Lightning exports it as PL_GLOBAL_SEED to every process).
    """
    distributed = dist.is_available() and dist.is_initialized()
    sampler = TrainSampler(
        dataset,
        batch_size=batch_size,
        num_replicas=dist.get_world_size() if distributed else 1,
        rank=dist.get_rank() if distributed else 0,
        seed=int(os.environ.get("PL_GLOBAL_SEED", 0)) if seed is None else seed,
        accumulate=accumulate,
        lengths=lengths,
    )
    options = loader_options(batch_size, collate_fn, num_workers)
    # Workers copy the collator when they start: one that follows the epoch needs them started again each epoch.
    options["persistent_workers"] &= not hasattr(collate_fn, "set_epoch")
    return TrainLoader(dataset, sampler=sampler, **options)


def loader_options(batch_size: int, collate_fn: Callable[[list[Any]], Any], num_workers: int) -> dict[str, Any]:
    """`DataLoader` options every loader shares. Its own generator keeps the loader from drawing worker seeds from
    the global one, which would shift dropout after an evaluation and so make a resumed fit differ."""
    return {
        "batch_size": batch_size,
        "collate_fn": collate_fn,
        "num_workers": num_workers,
        "persistent_workers": num_workers > 0,
        "generator": torch.Generator(),
    }


def longest_first(dataset: Any) -> list[int]:
    """Positions by decreasing `input_ids` length (stable): batches with less padding, and the largest first, so a
    batch that does not fit in memory shows at once."""
    lengths = np.asarray(pc.list_value_length(dataset.with_format("arrow")["input_ids"]))
    return np.argsort(-lengths, kind="stable").tolist()
