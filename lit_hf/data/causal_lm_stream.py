"""Streamed training blocks for causal LM: rows read lazily, tokenized and cut into blocks as training goes, each
process its share of the rows, every process the same number of batches, each block with the place in the rows
where the next one starts, so a resumed run reads on from there instead of tokenizing the rows again."""

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

from lit_hf.data import causal_lm_inputs as inputs
from lit_hf.data.base import running_stage
from lit_hf.data.sources import load_files, load_hub, missing_split
from lit_hf.errors import ConfigError, LitHFError

# Where a stream stands: (row, token) = every token before token `token` of row `row` of the process's rows is in
# the blocks made so far, none from there on (`row` may be an empty row before the next token's).
Place = tuple[int, int]


def stream_blocks(
    token_rows: Iterable[list[list[int]]], block_size: int, packing: bool, start: Place = (0, 0)
) -> Iterator[dict]:
    """`write_blocks` as a stream: batches of token rows in, `block_size` blocks out (`cut_blocks`, as the map-style
    path cuts its chunks), the tokens of an unfinished block carried into the next batch and the final
    remainder dropped. The rows begin at row `start[0]`, whose first `start[1]` tokens are left out; every block
    carries `stream_place`, the place after it (an array: row, token)."""
    ids, lengths = np.zeros(0, np.int32), np.zeros(0, np.int64)
    first_row, skipped = start  # the buffer's first row and how many of its tokens came before the buffer
    trim = start[1]
    for rows in token_rows:
        if trim:  # the row resumed in: its tokens from start[1] on
            rows, trim = [rows[0][trim:], *rows[1:]], 0
        new_lengths = np.fromiter(map(len, rows), np.int64, len(rows))
        new_ids = np.fromiter(chain.from_iterable(rows), np.int32, int(new_lengths.sum()))
        ids, lengths = np.concatenate([ids, new_ids]), np.concatenate([lengths, new_lengths])
        ends = np.cumsum(lengths)
        blocks, positions, ids, rest = inputs.cut_blocks(ids, lengths, block_size, packing)
        places = buffer_places(np.arange(len(blocks) + 1) * block_size, ends, first_row, skipped)  # (blocks + 1, 2)
        for i, block in enumerate(blocks):
            out = {"input_ids": block, "stream_place": places[i + 1]}
            yield out if positions is None else {**out, "position_ids": positions[i]}
        (first_row, skipped), lengths = places[-1].tolist(), rest


def buffer_places(tokens: np.ndarray, ends: np.ndarray, first_row: int, skipped: int) -> np.ndarray:
    """The places of the buffer's tokens numbered `tokens`, given the buffer's cumulative row ends: (len(tokens), 2)."""
    k = np.searchsorted(ends, tokens, side="right")  # the row holding each, or the row after the buffer
    into = tokens - np.concatenate([[0], ends])[k] + np.where(k == 0, skipped, 0)
    return np.stack([first_row + k, into], axis=1).astype(np.int64)


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
    shuffled in a buffer seeded by (seed, epoch, rank) when `shuffle_buffer` > 0; `limit` blocks at most.

    A resumed epoch either starts at `start` (a block's `stream_place`; unshuffled streams), reading the rows before
    it without tokenizing them, having consumed `consumed` blocks of the limit; or, shuffled, makes the epoch's
    blocks again and leaves out the first `skip` (the shuffle buffer's contents are not saved)."""

    def __init__(self, rows: RowStream, tokenize: Callable, *, block_size: int, packing: bool, text_column: str,
                 shuffle_buffer: int, seed: int, rank: int, limit: int | None) -> None:  # fmt: skip
        self.rows, self.tokenize, self.text_column = rows, tokenize, text_column
        self.block_size, self.packing, self.shuffle_buffer = block_size, packing, shuffle_buffer
        self.seed, self.rank, self.limit = seed, rank, limit
        self.epoch = self.skip = self.consumed = 0
        self.start: Place = (0, 0)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        token_rows = (self._token_ids(batch) for batch in self._row_batches())
        limit = None if self.limit is None else max(self.limit - self.consumed, 0)
        blocks = islice(stream_blocks(token_rows, self.block_size, self.packing, self.start), limit)
        if self.shuffle_buffer:
            blocks = shuffled(blocks, self.shuffle_buffer, np.random.default_rng([self.seed, self.epoch, self.rank]))
        return islice(blocks, self.skip, None)  # skipping makes the skipped blocks again: exact, not free

    def _row_batches(self) -> Iterator[dict[str, list]]:
        """Batches of rows from row `start[0]` on: the rows before it are read (to count them), not tokenized."""
        ahead = self.start[0]
        for batch in self.rows.iter(batch_size=inputs.BATCH_ROWS):
            size = len(next(iter(batch.values())))
            if ahead >= size:
                ahead -= size
                continue
            yield {name: values[ahead:] for name, values in batch.items()} if ahead else batch
            ahead = 0

    def _token_ids(self, batch: dict[str, list]) -> list[list[int]]:
        if self.text_column not in batch:
            raise LitHFError(
                f"The streamed train split has no column {self.text_column!r} (columns: {', '.join(batch)}); "
                "set --data.text_column."
            )
        return self.tokenize(batch)["input_ids"]


TEXT_CHUNK_BYTES = 1 << 20  # a text file is read 1 MiB at a time (datasets' text builder: 10 MiB by default)


class StreamLoader(DataLoader):
    """Batches of a `BlockStream` that end on every process at once, whose position Lightning saves in checkpoints.

    Processes hold different rows, so one may run out of blocks first; DDP would then wait forever for its
    gradients. Before each batch the processes agree (one all-gather of a flag and their stream places) that all of
    them have one, so every process stops at the smallest count: the extra batches of the others are dropped for
    this epoch, as is the last partial batch. A checkpoint holds each process's place after the batches consumed:
    a resumed unshuffled epoch reads on from there (the rows before it read, not tokenized); a shuffled one makes
    the epoch's blocks again and leaves out those consumed.

    `position` gives the trainer's epoch and the batches of it the training loop has taken: Lightning fetches a batch
    ahead of those from a loader without a length, so the loader's own count would be one too many in a checkpoint.
    """

    def __init__(self, stream: BlockStream, *, batch_size: int, num_workers: int,
                 position: Callable[[], tuple[int, int]] | None = None) -> None:  # fmt: skip
        # One stream is one sequence: a second worker would read the same rows again, so at most one reads ahead.
        workers = min(num_workers, 1)
        super().__init__(stream, batch_size=batch_size, collate_fn=collate_placed, num_workers=workers, drop_last=True)
        self.position, self._resume = position, None
        self._places: dict[int, list[list[int]]] = {}  # batches consumed this epoch -> every process's place

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        # A generator: this runs at the first batch, when the trainer's epoch is the one being trained.
        stream: BlockStream = self.dataset
        stream.epoch = self.position()[0] if self.position else 0
        resume_epoch, seen, places = self._resume or (stream.epoch, 0, None)
        seen = seen if resume_epoch == stream.epoch else 0
        places = places if seen and places and len(places) == world_size() and not stream.shuffle_buffer else None
        stream.start, stream.consumed = (tuple(places[stream.rank]), seen * self.batch_size) if places else ((0, 0), 0)
        stream.skip = 0 if places else seen * self.batch_size
        self._resume, self._places, batches, count = None, {seen: places}, super().__iter__(), seen
        while (agreed := all_processes(batch := next(batches, None))) is not None:
            count += 1
            # kept for the last batches: the trainer, which fetches ahead, counts fewer consumed than were made
            self._places = {n: p for n, p in self._places.items() if n >= count - 2} | {count: agreed}
            yield batch
        if count == seen and stream.skip == 0 and not places:
            raise LitHFError(
                f"The training stream gave no batch of {self.batch_size} blocks of {stream.block_size} tokens on "
                "some process; lower --data.batch_size or --data.block_size, or stream more text."
            )

    def state_dict(self) -> dict[str, Any]:
        """The epoch, the seed, the batches of it each process has consumed (all consume the same) and each one's
        place in its rows after them (None where not known, e.g. shuffled: a resume then makes the blocks again)."""
        epoch, seen = self.position() if self.position else (self.dataset.epoch, 0)
        places = self._places.get(seen) if epoch == self.dataset.epoch and not self.dataset.shuffle_buffer else None
        return {"epoch": epoch, "seed": self.dataset.seed, "seen": seen, "places": places}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dataset.seed = state["seed"]  # the order of the run that saved it, whatever seed this run drew
        self._resume = (state["epoch"], state["seen"], state.get("places"))  # no places: checkpoints before them


def collate_placed(examples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """`collate_blocks`, and the stream place after the batch's last block (`stream_place`, taken off the batch by
    `StreamLoader` before the model sees it)."""
    return {**inputs.collate_blocks(examples), "stream_place": torch.from_numpy(examples[-1]["stream_place"])}


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_processes(batch: dict[str, torch.Tensor] | None) -> list[list[int]] | None:
    """Every process's stream place after its `batch` when every process has one (one all-gather when
    distributed); None when one has none. Takes the place off the batch."""
    place = batch.pop("stream_place").tolist() if batch is not None else [-1, -1]
    mine = torch.tensor([int(batch is not None), *place], dtype=torch.int64)
    if world_size() == 1:
        return [place] if batch is not None else None
    if dist.get_backend() == "nccl":
        mine = mine.to(torch.device("cuda", torch.cuda.current_device()))
    gathered = [torch.empty_like(mine) for _ in range(world_size())]
    dist.all_gather(gathered, mine)
    rows = [t.tolist() for t in gathered]
    return [row[1:] for row in rows] if all(row[0] for row in rows) else None


def train_loader(hp: Any, files: dict[str, str], tokenizer: PreTrainedTokenizerBase, block_size: int,
                 trainer: Any) -> StreamLoader:  # fmt: skip
    """The training loader of `streaming=true`: this process's rows of the train split (`split_dataset_by_node`:
    whole shards per process when their number divides by the processes, else every N-th row), as blocks."""
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    rows = split_dataset_by_node(train_rows(hp, files), rank=rank, world_size=world)
    limit = hp.max_train_samples // world if hp.max_train_samples else None  # N blocks over all processes
    seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
    eos = inputs.document_separator(tokenizer, hp.add_eos_between_documents)
    tokenize = partial(inputs.tokenize_text, tokenizer=tokenizer, text_column=hp.text_column, eos_token_id=eos)
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
