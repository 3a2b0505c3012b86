"""A split's token stream cut into fixed blocks and written to an Arrow file chunk by chunk, so memory is bounded by
a chunk, not the corpus; the rows are tokenized in batches of rows, in worker processes when asked."""

import contextlib
import multiprocessing
import shutil
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from pathlib import Path

import numpy as np
import pyarrow as pa
from datasets import Dataset
from datasets.utils.tqdm import tqdm

# (token ids, int32; tokens per row, int64): whole rows, except that a chunk's leftover starts with a row's tail.
Piece = tuple[np.ndarray, np.ndarray]
BATCH_ROWS = 1000  # rows per tokenizer call: `Dataset.map`'s default batch, so a batch holds what it held there
CHUNK_TOKENS = 1 << 20  # tokens grouped and written at once (a chunk's ids and positions: ~13 bytes per token)

_WORK: tuple[Dataset, str, Callable] | None = None  # what a worker process tokenizes, set by its initializer


def tokenized_pieces(
    raw: Dataset, text_column: str, tokenize: Callable[[dict[str, list]], dict[str, list]], workers: int | None
) -> Iterator[Piece]:
    """Each batch of BATCH_ROWS rows through `tokenize` (a per-example transform returning `input_ids` lists), in
    row order; with `workers` > 1 the batches are tokenized by that many processes."""
    raw = raw.select_columns([text_column])  # no copy; slicing it below honours a `select`'s indices
    spans = [(start, min(start + BATCH_ROWS, len(raw))) for start in range(0, len(raw), BATCH_ROWS)]
    if not workers or workers < 2 or len(spans) < 2:
        yield from (_tokenize_span(raw, text_column, tokenize, span) for span in spans)
        return
    methods = multiprocessing.get_all_start_methods()  # fork shares the loaded tokenizer and the mapped text
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    with context.Pool(min(workers, len(spans)), _start_worker, ((raw, text_column, tokenize),)) as pool:
        yield from pool.imap(_tokenize_in_worker, spans, chunksize=2)


def _start_worker(work: tuple[Dataset, str, Callable]) -> None:
    global _WORK
    _WORK = work


def _tokenize_in_worker(span: tuple[int, int]) -> Piece:
    return _tokenize_span(*_WORK, span)


def _tokenize_span(raw: Dataset, text_column: str, tokenize: Callable, span: tuple[int, int]) -> Piece:
    texts = raw[span[0] : span[1]][text_column]
    rows = tokenize({text_column: texts})["input_ids"]
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    return np.fromiter(chain.from_iterable(rows), dtype=np.int32, count=int(lengths.sum())), lengths


@contextlib.contextmanager
def scratch_folder(beside: Path) -> Iterator[Path]:
    """A folder beside the cache `beside` (its filesystem, which has room for the corpus), removed afterwards; a
    killed run's is a leftover that `atomic.remove_stale` removes."""
    from lit_hf.atomic import temporary_name  # imports torch: not needed to group blocks

    folder = temporary_name(beside.parent / "blocks")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def list_pieces(token_lists: pa.ChunkedArray) -> Iterator[Piece]:
    """The rows of an Arrow list column (one piece per BATCH_ROWS rows of a chunk)."""
    for chunk in token_lists.chunks:
        for start in range(0, len(chunk), BATCH_ROWS):
            rows = chunk.slice(start, BATCH_ROWS)
            lengths = rows.value_lengths().fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
            yield rows.flatten().to_numpy(zero_copy_only=False).astype(np.int32, copy=False), lengths


def group_pieces(
    pieces: Iterable[Piece], block_size: int, packing: bool, path: Path, total: int | None = None, desc: str = ""
) -> tuple[Dataset, int]:
    """All pieces as one stream cut into `block_size` blocks (the remainder dropped) in an Arrow file at `path`,
    written every CHUNK_TOKENS; returns the blocks (memory-mapped) and the stream's token count.

    With `packing`, each block also gets `position_ids` that restart at 0 where a row (document) starts and at the
    block's start (the part of a document cut off by the block boundary is not visible to it)."""
    writer = _BlockWriter(path, block_size, packing)
    with tqdm(total=total, desc=desc, unit=" rows", disable=total is None) as bar:
        for ids, lengths in pieces:
            writer.add(ids, lengths)
            bar.update(len(lengths))
    return Dataset.from_file(str(writer.close())), writer.tokens


class _BlockWriter:
    """Buffers pieces; every CHUNK_TOKENS writes the buffer's whole blocks and keeps the rest for the next."""

    def __init__(self, path: Path, block_size: int, packing: bool) -> None:
        self.path, self.block_size, self.packing = path, block_size, packing
        self.ids: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []
        self.buffered = self.tokens = 0
        item = pa.list_(pa.int32(), block_size)
        names = ["input_ids", "position_ids"] if packing else ["input_ids"]
        self.schema = pa.schema([pa.field(name, item) for name in names])
        self.sink = pa.ipc.new_stream(str(path), self.schema)  # the stream format `Dataset.from_file` reads

    def add(self, ids: np.ndarray, lengths: np.ndarray) -> None:
        self.ids.append(ids)
        self.lengths.append(lengths)
        self.buffered += len(ids)
        self.tokens += len(ids)
        if self.buffered >= CHUNK_TOKENS:
            self._write_blocks()

    def close(self) -> Path:
        self._write_blocks()
        self.sink.close()
        return self.path

    def _write_blocks(self) -> None:
        ids, lengths = np.concatenate(self.ids or [np.zeros(0, np.int32)]), np.concatenate(self.lengths or [[0]])
        blocks, positions, rest, rest_lengths = cut_blocks(ids, lengths, self.block_size, self.packing)
        self.ids, self.lengths, self.buffered = [rest], [rest_lengths], len(rest)
        if len(blocks) == 0:
            return
        columns = [pa.FixedSizeListArray.from_arrays(pa.array(blocks.ravel()), self.block_size)]
        if positions is not None:
            columns.append(pa.FixedSizeListArray.from_arrays(pa.array(positions.ravel()), self.block_size))
        self.sink.write_batch(pa.record_batch(columns, schema=self.schema))


def cut_blocks(
    ids: np.ndarray, lengths: np.ndarray, block_size: int, packing: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """A stream's whole blocks, (blocks, block_size), their packed positions (or None), and the tokens and row
    lengths left over for the next piece of the stream (a copy, not a view). The stream starts at a block start,
    where positions restart anyway, so a stream cut piece by piece gives the blocks of one cut."""
    usable = len(ids) // block_size * block_size
    taken, rest = split_lengths(lengths, usable)
    positions = document_positions(taken, block_size).reshape(-1, block_size) if packing else None
    return ids[:usable].reshape(-1, block_size), positions, ids[usable:].copy(), rest


def split_lengths(lengths: np.ndarray, cut: int) -> tuple[np.ndarray, np.ndarray]:
    """Row lengths of a stream's first `cut` tokens and of the rest: the row that straddles the cut is split."""
    ends = np.cumsum(lengths)
    whole = int(np.searchsorted(ends, cut, side="right"))  # rows that end at or before the cut
    head = cut - (int(ends[whole - 1]) if whole else 0)  # tokens of the next row before the cut
    tail = lengths[whole:].copy()
    if len(tail):
        tail[0] -= head
    return np.append(lengths[:whole], head), tail


def document_positions(lengths: np.ndarray, block_size: int) -> np.ndarray:
    """Position of every token of the stream within its document, restarting at each multiple of block_size
    (int32 below 2**31 tokens: a chunk's positions take 9 bytes per token)."""
    total = int(lengths.sum())
    starts = np.zeros(total, dtype=bool)
    starts[np.cumsum(lengths)[:-1][lengths[1:] > 0]] = True  # first token of each document after the first
    starts[::block_size] = True
    index = np.arange(total, dtype=np.int32 if total < 2**31 else np.int64)
    last_start = np.where(starts, index, 0)
    np.maximum.accumulate(last_start, out=last_start)
    index -= last_start
    return index
