"""The training order: one global order per epoch, each process a slice of every global batch, resumable."""

import pytest
import torch

from lit_hf.data.sampling import TrainLoader, TrainSampler
from lit_hf.errors import LitHFError


def batches(n: int, processes: int, batch_size: int, epoch: int, **kwargs) -> list[list[int]]:
    """Per step, the examples of all processes together (rank 0's batch, then rank 1's, ...)."""
    shards = []
    for rank in range(processes):
        sampler = TrainSampler(range(n), batch_size=batch_size, num_replicas=processes, rank=rank, seed=3, **kwargs)
        sampler.set_epoch(epoch)
        shards.append([batch.tolist() for batch in TrainLoader(range(n), sampler=sampler, batch_size=batch_size)])
    assert len({len(shard) for shard in shards}) == 1  # every process the same number of batches: DDP cannot hang
    return [sum((shard[step] for shard in shards), []) for step in range(len(shards[0]))]


@pytest.mark.parametrize("lengths", [None, [i % 7 for i in range(43)]])
def test_processes_slice_the_global_batches_of_one_process(lengths):
    one = batches(43, 1, 8, epoch=0, lengths=lengths)
    assert batches(43, 2, 4, epoch=0, lengths=lengths) == one == batches(43, 4, 2, epoch=0, lengths=lengths)
    assert len(one) == 5 and len({i for batch in one for i in batch}) == 40  # 3 left out, the rest once each
    accumulated = batches(43, 1, 4, epoch=0, accumulate=2, lengths=lengths)  # micro-batches of the same steps
    assert [a + b for a, b in zip(accumulated[::2], accumulated[1::2], strict=True)] == one
    assert batches(43, 1, 8, epoch=1, lengths=lengths) != one  # a new order each epoch
    left_out = [set(range(43)) - {i for batch in batches(43, 1, 8, epoch=e) for i in batch} for e in range(4)]
    assert len({frozenset(s) for s in left_out}) > 1  # not always the same examples


def test_length_grouping_pads_less_within_each_global_batch():
    lengths = torch.randint(1, 200, (400,), generator=torch.Generator().manual_seed(0)).tolist()
    padded = {}
    for grouped in (None, lengths):
        steps = batches(400, 2, 8, epoch=0, lengths=grouped)
        padded[grouped is not None] = sum(
            max(lengths[i] for i in s) * len(s) - sum(lengths[i] for i in s) for s in steps
        )
    assert padded[True] < padded[False] / 3


def test_loader_state_resumes_with_the_next_batch():
    def loader(rank: int) -> TrainLoader:
        sampler = TrainSampler(range(50), batch_size=3, num_replicas=2, rank=rank, seed=0)
        return TrainLoader(range(50), sampler=sampler, batch_size=3)

    whole, first = loader(1), loader(1)
    whole.sampler.set_epoch(2)
    first.sampler.set_epoch(2)
    expected = [b.tolist() for b in whole]
    seen = []
    for batch in first:
        seen.append(batch.tolist())
        if len(seen) == 3:
            break
    state = first.state_dict()
    assert state == {"epoch": 2, "seed": 0, "seen": 3 * 6}  # 3 batches of 3 on each of 2 processes
    resumed = loader(1)
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)  # Lightning sets the epoch again before iterating
    assert seen + [b.tolist() for b in resumed] == expected
    resumed.sampler.set_epoch(3)
    assert len(list(resumed)) == len(expected)  # the next epoch is whole again


def test_a_training_set_smaller_than_one_step_is_an_error():
    with pytest.raises(LitHFError, match="fewer than one optimizer step's 16"):
        TrainSampler(range(10), batch_size=4, num_replicas=2, rank=0, seed=0, accumulate=2)
