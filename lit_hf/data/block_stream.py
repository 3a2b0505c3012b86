"""One process's streamed rows as training blocks, tokenized and cut as they are read, each block with the place in
the rows where the next one starts, so a resumed run reads on from there instead of tokenizing the rows again."""

from collections.abc import Callable, Iterable, Iterator
from itertools import chain, islice
from typing import Any

import numpy as np
from datasets import IterableDataset as RowStream
from torch.utils.data import IterableDataset

from lit_hf.data.lm_blocks import cut_blocks
from lit_hf.errors import LitHFError

ROWS_PER_TOKENIZER_CALL = 1000  # as Dataset.map(batched=True) calls it

# Where a stream stands: (row, token) = every token before token `token` of row `row` of the process's rows is in
# the blocks made so far, none from there on (`row` may be an empty row before the next token's).
Place = tuple[int, int]


def stream_blocks(
    token_rows: Iterable[list[list[int]]], block_size: int, packing: bool, start: Place = (0, 0)
) -> Iterator[dict]:
    """`group_blocks` as a stream: batches of token rows in, `block_size` blocks out (`lm_blocks.cut_blocks`, as the
    map-style path cuts its chunks), the tokens of an unfinished block carried into the next batch and the final
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
        blocks, positions, ids, rest = cut_blocks(ids, lengths, block_size, packing)
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
        for batch in self.rows.iter(batch_size=ROWS_PER_TOKENIZER_CALL):
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
