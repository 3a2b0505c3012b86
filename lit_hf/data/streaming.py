"""Streamed training blocks for language modeling: rows read lazily, tokenized and cut into blocks on the fly, each
process its share of the rows, every process the same number of batches, resumable mid-epoch."""

import os
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from itertools import chain, islice
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from datasets import Dataset, DatasetDict, NamedSplit
from datasets import IterableDataset as RowStream
from datasets.distributed import split_dataset_by_node
from datasets.fingerprint import Hasher
from torch.utils.data import DataLoader, IterableDataset
from transformers import PreTrainedTokenizerBase

from lit_hf.data.lm_blocks import cut_blocks
from lit_hf.data.lm_inputs import collate_blocks, document_separator, tokenize_text
from lit_hf.data.prepared import running_stage
from lit_hf.data.sources import load_files, load_hub, missing_split
from lit_hf.errors import ConfigError, LitHFError

ROWS_PER_TOKENIZER_CALL = 1000  # as Dataset.map(batched=True) calls it
TEXT_CHUNK_BYTES = 1 << 20  # a text file is read 1 MiB at a time (datasets' text builder: 10 MiB by default)


def stream_blocks(token_rows: Iterable[list[list[int]]], block_size: int, packing: bool) -> Iterator[dict]:
    """`group_blocks` as a stream: batches of token rows in, `block_size` blocks out (`lm_blocks.cut_blocks`, as the
    map-style path cuts its chunks), the tokens of an unfinished block carried into the next batch and the final
    remainder dropped."""
    ids, lengths = np.zeros(0, np.int32), np.zeros(0, np.int64)
    for rows in token_rows:
        new_lengths = np.fromiter(map(len, rows), np.int64, len(rows))
        new_ids = np.fromiter(chain.from_iterable(rows), np.int32, int(new_lengths.sum()))
        blocks, positions, ids, lengths = cut_blocks(
            np.concatenate([ids, new_ids]), np.concatenate([lengths, new_lengths]), block_size, packing
        )
        for i, block in enumerate(blocks):
            yield {"input_ids": block} if positions is None else {"input_ids": block, "position_ids": positions[i]}


def shuffled(items: Iterator[Any], buffer_size: int, rng: np.random.Generator) -> Iterator[Any]:
    """Items in a random order drawn from a buffer of `buffer_size`: each new item takes the place of a random one,
    which comes out (the buffer shuffle of `datasets.IterableDataset.shuffle`)."""
    buffer = list(islice(items, buffer_size))
    for item in items:
        i = int(rng.integers(len(buffer)))
        buffer[i], item = item, buffer[i]
        yield item
    yield from (buffer[i] for i in rng.permutation(len(buffer)))


class BlockStream(IterableDataset):
    """This process's training blocks for one epoch: its rows (`rows`, already split by node) tokenized and grouped,
    shuffled in a buffer seeded by (seed, epoch, rank) when `shuffle_buffer` > 0, the first `skip` left out."""

    def __init__(self, rows: RowStream, tokenize: Callable, *, block_size: int, packing: bool, text_column: str,
                 shuffle_buffer: int, seed: int, rank: int, limit: int | None) -> None:  # fmt: skip
        self.rows, self.tokenize, self.text_column = rows, tokenize, text_column
        self.block_size, self.packing, self.shuffle_buffer = block_size, packing, shuffle_buffer
        self.seed, self.rank, self.limit = seed, rank, limit
        self.epoch = self.skip = 0

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        token_rows = (self._token_ids(batch) for batch in self.rows.iter(batch_size=ROWS_PER_TOKENIZER_CALL))
        blocks = islice(stream_blocks(token_rows, self.block_size, self.packing), self.limit)
        if self.shuffle_buffer:
            blocks = shuffled(blocks, self.shuffle_buffer, np.random.default_rng([self.seed, self.epoch, self.rank]))
        return islice(blocks, self.skip, None)  # skipping reads and tokenizes the skipped part again: exact, not free

    def _token_ids(self, batch: dict[str, list]) -> list[list[int]]:
        if self.text_column not in batch:
            raise LitHFError(
                f"The streamed train split has no column {self.text_column!r} (columns: {', '.join(batch)}); "
                "set --data.text_column."
            )
        return self.tokenize(batch)["input_ids"]


class StreamLoader(DataLoader):
    """Batches of a `BlockStream` that end on every process at once, whose position Lightning saves in checkpoints.

    Processes hold different rows, so one may run out of blocks first; DDP would then wait forever for its
    gradients. Before each batch the processes agree (one all-reduce of a flag) that all of them have one, so every
    process stops at the smallest count: the extra batches of the others are dropped for this epoch, as is the last
    partial batch. A resumed epoch reads its stream again from the start and leaves out the batches consumed.

    `position` gives the trainer's epoch and the batches of it the training loop has taken: Lightning fetches a batch
    ahead of those from a loader without a length, so the loader's own count would be one too many in a checkpoint.
    """

    def __init__(self, stream: BlockStream, *, batch_size: int, num_workers: int,
                 position: Callable[[], tuple[int, int]] | None = None) -> None:  # fmt: skip
        # One stream is one sequence: a second worker would read the same rows again, so at most one reads ahead.
        workers = min(num_workers, 1)
        super().__init__(stream, batch_size=batch_size, collate_fn=collate_blocks, num_workers=workers, drop_last=True)
        self.position, self._resume = position, None

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        # A generator: this runs at the first batch, when the trainer's epoch is the one being trained.
        stream: BlockStream = self.dataset
        stream.epoch = self.position()[0] if self.position else 0
        resume_epoch, seen = self._resume or (stream.epoch, 0)
        stream.skip = (seen if resume_epoch == stream.epoch else 0) * self.batch_size
        self._resume, batches, count = None, super().__iter__(), 0
        while all_processes(batch := next(batches, None)):
            count += 1
            yield batch
        if count == 0 and stream.skip == 0:
            raise LitHFError(
                f"The training stream gave no batch of {self.batch_size} blocks of {stream.block_size} tokens on "
                "some process; lower --data.batch_size or --data.block_size, or stream more text."
            )

    def state_dict(self) -> dict[str, int]:
        """The epoch, the seed and the batches of it each process has consumed (all processes consume the same)."""
        epoch, seen = self.position() if self.position else (self.dataset.epoch, 0)
        return {"epoch": epoch, "seed": self.dataset.seed, "seen": seen}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.dataset.seed = state["seed"]  # the order of the run that saved it, whatever seed this run drew
        self._resume = (state["epoch"], state["seen"])


def all_processes(batch: Any) -> bool:
    """Whether every process has a batch (`batch` is not None here): one all-reduce when distributed."""
    if not (dist.is_available() and dist.is_initialized()):
        return batch is not None
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    flag = torch.tensor([int(batch is not None)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def train_loader(hp: Any, files: dict[str, str], tokenizer: PreTrainedTokenizerBase, block_size: int,
                 trainer: Any) -> StreamLoader:  # fmt: skip
    """The training loader of `streaming=true`: this process's rows of the train split (`split_dataset_by_node`:
    whole shards per process when their number divides by the processes, else every N-th row), as blocks."""
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    rows = split_dataset_by_node(train_rows(hp, files), rank=rank, world_size=world)
    limit = hp.max_train_samples // world if hp.max_train_samples else None  # N blocks over all processes
    seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
    eos = document_separator(tokenizer, hp.add_eos_between_documents)
    tokenize = partial(tokenize_text, tokenizer=tokenizer, text_column=hp.text_column, eos_token_id=eos)
    options = {"block_size": block_size, "packing": hp.packing, "text_column": hp.text_column, "limit": limit}
    stream = BlockStream(rows, tokenize, shuffle_buffer=hp.streaming_shuffle_buffer, seed=seed, rank=rank, **options)
    position = trainer_position(trainer)
    return StreamLoader(stream, batch_size=hp.batch_size, num_workers=hp.num_workers, position=position)


def trainer_position(trainer: Any) -> Callable[[], tuple[int, int]] | None:
    """The trainer's epoch and the batches of it its training loop has taken (restored with the loop on resume)."""
    if trainer is None:
        return None
    loop = trainer.fit_loop
    return lambda: (loop.epoch_progress.current.processed, loop.epoch_loop.batch_progress.current.ready)


def train_rows(hp: Any, files: dict[str, str]) -> RowStream:
    """The train split as a stream of rows: the train file read as it goes, else the hub dataset's train split."""
    if "train" in files:
        text = {"keep_linebreaks": hp.keep_linebreaks, "sample_by": hp.sample_by, "chunksize": TEXT_CHUNK_BYTES}
        return load_files({"train": files["train"]}, hp.data_cache_dir, "text", streaming=True, **text)["train"]
    if not hp.dataset_name:
        raise LitHFError("streaming=true reads --data.train_file or the train split of --data.dataset_name; give one.")
    stream = load_hub(hp.dataset_name, hp.dataset_config_name, None, hp.data_cache_dir, streaming=True)
    if "train" not in stream:
        raise missing_split("train", stream)
    return stream["train"]


def eval_splits(hp: Any, files: dict[str, str], needs_validation: bool) -> DatasetDict:
    """The raw evaluation splits when training streams: the given files, else the hub dataset's splits read as
    streams into Arrow files; the train split is never read here, so never cached. A fit without a validation split
    is one without validation, if validation_split_percentage says so."""
    if files or not hp.dataset_name:  # local files win over dataset_name, as without streaming
        text = {"keep_linebreaks": hp.keep_linebreaks, "sample_by": hp.sample_by}
        raw = load_files({s: path for s, path in files.items() if s != "train"}, hp.data_cache_dir, "text", **text)
    else:
        hub = load_hub(hp.dataset_name, hp.dataset_config_name, None, hp.data_cache_dir, streaming=True)
        identity = [hp.dataset_name, hp.dataset_config_name]
        raw = DatasetDict({split: written(rows, split, hp.data_cache_dir, identity) for split, rows in hub.items()
                           if split != "train"})  # fmt: skip
    if needs_validation and "validation" not in raw:
        no_carving(hp.validation_split_percentage)
    return raw


def written(rows: RowStream, split: str, cache_dir: str | None, identity: list[str | None]) -> Dataset:
    """A streamed split written to an Arrow file as it is read (by `datasets`' generator builder, named by
    `identity` so that the stream object is not hashed)."""
    options = {"cache_dir": cache_dir, "split": NamedSplit(split), "fingerprint": Hasher.hash([*identity, split])}
    return Dataset.from_generator(each_row, gen_kwargs={"rows": rows}, **options)


def each_row(rows: RowStream) -> Iterator[dict]:
    yield from rows


def check_options(streaming: bool, dataset_path: str | None, shuffle_buffer: int) -> None:
    if streaming and dataset_path:
        raise ConfigError("streaming=true reads train_file or dataset_name; dataset_path is memory-mapped already.")
    if shuffle_buffer < 0:
        raise ConfigError(f"streaming_shuffle_buffer must be 0 (no shuffle) or more, got {shuffle_buffer}.")


def check_fit(streaming: bool, trainer: Any) -> None:
    """What a streamed fit needs that a split of known length does not: a step count."""
    if streaming and running_stage(trainer) == "fit" and trainer.max_steps < 0:
        raise LitHFError(
            "--data.streaming=true: a stream has no known length, so the number of training steps (which the "
            "learning-rate schedule spans) is unknown; set --trainer.max_steps."
        )


def no_carving(percentage: int) -> None:
    """A stream's length is unknown, so no percentage of it can become the validation split."""
    if percentage:
        raise ConfigError(
            "--data.streaming=true cannot carve validation_split_percentage of the train split (a stream's length "
            "is unknown); give --data.validation_file (or a dataset with a validation split), or set "
            "--data.validation_split_percentage=0 to train without validation."
        )
