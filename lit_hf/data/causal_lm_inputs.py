"""Per-example transforms of causal-LM data: token ids of rows, the token stream cut into fixed blocks (packed or
not) or strided evaluation windows and written chunk by chunk, prompts, and the batches of each."""

import contextlib
import multiprocessing
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from datasets import Dataset
from datasets.utils.tqdm import tqdm
from torch import Tensor
from transformers import PreTrainedTokenizerBase
from transformers.tokenization_utils_base import PaddingStrategy, TruncationStrategy
from transformers.tokenization_utils_tokenizers import TokenizersBackend

from lit_hf.data.sources import require_columns
from lit_hf.errors import ConfigError, LitHFError

# --- token ids of rows ---------------------------------------------------------------------------------------

# Checked in transformers 5.24 (a packed block against each document alone): OPT derives positions from the
# attention mask and BLOOM uses ALiBi, so both let attention cross documents; GPT-2 and Llama honour position_ids.
IGNORE_PACKED_POSITIONS = ("opt", "bloom")


def tokenize_text(
    batch: dict[str, list], *, tokenizer: PreTrainedTokenizerBase, text_column: str, eos_token_id: int | None = None
) -> dict[str, list]:
    """Token ids of each row as it is, special tokens included where the tokenizer adds them (as run_clm.py), and
    `eos_token_id` after every row that has tokens (a document boundary) when given."""
    ids = encode_texts(tokenizer, batch[text_column])
    if eos_token_id is not None:
        ids = [row + [eos_token_id] if row else row for row in ids]
    return {"input_ids": ids}


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """Each text's ids with the special tokens the tokenizer adds, untruncated and unpadded.

    Where that call ends in the Rust tokenizer's `encode_batch` (a `TokenizersBackend` that overrides neither its
    `__call__` nor `_encode_plus`), the same backend's `encode_batch_fast` is called with the same settings instead:
    the same ids without computing character offsets and without building a Python encoding per row (GPT-2's
    tokenizer on WikiText: about 25% less time). Any other tokenizer is called as usual."""
    if not _plain_rust_call(tokenizer):
        return tokenizer(texts, return_attention_mask=False, verbose=False)["input_ids"]
    tokenizer.set_truncation_and_padding(
        padding_strategy=PaddingStrategy.DO_NOT_PAD, truncation_strategy=TruncationStrategy.DO_NOT_TRUNCATE,
        max_length=None, stride=0, pad_to_multiple_of=None, padding_side=None,
    )  # fmt: skip
    backend = tokenizer._tokenizer
    if backend.encode_special_tokens != tokenizer.split_special_tokens:
        backend.encode_special_tokens = tokenizer.split_special_tokens
    if hasattr(tokenizer, "_switch_to_input_mode"):  # seq2seq tokenizers' source-language special tokens
        tokenizer._switch_to_input_mode()
    return [encoding.ids for encoding in backend.encode_batch_fast(texts, add_special_tokens=True)]


def _plain_rust_call(tokenizer: PreTrainedTokenizerBase) -> bool:
    cls = type(tokenizer)
    return (
        isinstance(tokenizer, TokenizersBackend)
        and cls._encode_plus is TokenizersBackend._encode_plus
        and cls.__call__ is PreTrainedTokenizerBase.__call__
        and hasattr(tokenizer._tokenizer, "encode_batch_fast")
        and not getattr(tokenizer, "_in_target_context_manager", False)
    )


# --- blocks: the token stream cut into `block_size` pieces -----------------------------------------------------

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


def write_blocks(
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


def collate_blocks(examples: list[dict[str, np.ndarray]]) -> dict[str, Tensor]:
    """Blocks share one length, so no padding; labels are the inputs (the model shifts them).

    Packed blocks carry `position_ids`; no `attention_mask`, so transformers masks attention per document from the
    restarting positions, and the first token of each document is no label (-100): nothing before it predicts it."""
    input_ids = torch.from_numpy(np.stack([ex["input_ids"] for ex in examples])).long()  # (batch, block_size)
    if "position_ids" not in examples[0]:
        return {"input_ids": input_ids, "labels": input_ids}
    position_ids = torch.from_numpy(np.stack([ex["position_ids"] for ex in examples])).long()
    labels = input_ids.masked_fill(position_ids == 0, -100)  # -100 = ignored by the loss
    return {"input_ids": input_ids, "position_ids": position_ids, "labels": labels}


def check_packing(packing: bool, model_type: str | None) -> None:
    if packing and model_type in IGNORE_PACKED_POSITIONS:
        raise ConfigError(
            f"packing=true needs a model that masks attention by position_ids; {model_type} models attend across "
            "documents. Use packing=false (add_eos_between_documents=true still marks the boundaries)."
        )


def document_separator(tokenizer: PreTrainedTokenizerBase, add_eos_between_documents: bool) -> int | None:
    """The token put after every row (document): the tokenizer's end-of-text one, or None (run_clm's default)."""
    if not add_eos_between_documents:
        return None
    if tokenizer.eos_token_id is None:
        raise ConfigError("add_eos_between_documents=true, but the tokenizer has no end-of-text (eos) token.")
    return tokenizer.eos_token_id


def tokenize_and_group(
    raw: Dataset,
    split: str,
    tokenizer: PreTrainedTokenizerBase,
    hparams: Mapping[str, Any],
    size: int,
    path: Path,
    stride: int | None = None,
) -> Dataset:
    """Rows tokenized in batches straight into blocks written chunk by chunk: no `map` and no intermediate
    cache (the cache key already decides), memory bounded by a batch and a chunk. With `stride`, overlapping
    evaluation windows instead of blocks (`write_windows`)."""
    column = hparams["text_column"]
    require_columns(raw, split, {column: "text_column"})
    eos = document_separator(tokenizer, hparams["add_eos_between_documents"])
    tokenize = partial(tokenize_text, tokenizer=tokenizer, text_column=column, eos_token_id=eos)
    pieces = tokenized_pieces(raw, column, tokenize, hparams["preprocessing_num_workers"])
    if stride is not None:
        windows, n = write_windows(pieces, size, stride, path, total=len(raw), desc=f"Tokenize and window {split}")
        if n < 2:
            raise LitHFError(f"The {split} split has {n} tokens; strided evaluation needs 2 or more: add text.")
        return windows
    desc = f"Tokenize and group {split}"
    blocks, n = write_blocks(pieces, size, hparams["packing"], path, total=len(raw), desc=desc)
    if len(blocks) == 0:
        raise LitHFError(
            f"The {split} split has {n} tokens, fewer than one block of {size}; lower --data.block_size or add text."
        )
    return blocks


# --- strided evaluation windows --------------------------------------------------------------------------------


def check_stride(eval_stride: int | None, block_size: int | None, packing: bool) -> None:
    """What `--data.eval_stride` refuses: a stride below 1 or above the block (tokens no window covers), and packing
    (positions restarting at every document take away the context the windows are there to give)."""
    if eval_stride is None:
        return
    if eval_stride < 1:
        raise ConfigError(f"eval_stride must be 1 or more (tokens between window starts), got {eval_stride}.")
    if block_size is not None and eval_stride > block_size:
        raise ConfigError(
            f"eval_stride {eval_stride} is larger than block_size {block_size}: the tokens between two windows would "
            "never be scored; use an eval_stride of at most block_size (equal: disjoint windows)."
        )
    if packing:
        raise ConfigError(
            "eval_stride and packing=true do not combine: packed positions restart at every document, which takes "
            "away the preceding context strided windows give each token; use packing=false for strided evaluation."
        )


def write_windows(
    pieces: Iterable[Piece], block_size: int, stride: int, path: Path, total: int | None = None, desc: str = ""
) -> tuple[Dataset, int]:
    """The windows of the stream of all pieces, written to an Arrow file at `path` every CHUNK_TOKENS of the stream;
    returns them (memory-mapped, one row per window: `input_ids` and `score_from`) and the stream's token count.

    Window i holds tokens [i * stride, min(i * stride + block_size, n)); the last window is the first that reaches
    the stream's end n, so no remainder is dropped (it may be shorter than a block). `score_from` is the first
    position whose label counts: 0 for the first window, else block_size - stride, the tokens the window before
    already scored (the guide's `trg_len` rule). Position 0 has no prediction, so with stride = block_size each
    window's first token goes unscored, as in the guide; below it, every token after the stream's first is scored
    once."""
    writer = _WindowWriter(path, block_size, stride)
    with tqdm(total=total, desc=desc, unit=" rows", disable=total is None) as bar:
        for ids, lengths in pieces:
            writer.add(ids)
            bar.update(len(lengths))
    return Dataset.from_file(str(writer.close())), writer.tokens


class _WindowWriter:
    """Buffers the stream from the next window's start; writes every whole window the buffer holds, and at the end
    the last, shorter one."""

    SCHEMA = pa.schema([pa.field("input_ids", pa.list_(pa.int32())), pa.field("score_from", pa.int32())])

    def __init__(self, path: Path, block_size: int, stride: int) -> None:
        self.path, self.block_size, self.stride = path, block_size, stride
        self.buffer: list[np.ndarray] = []
        self.base = 0  # stream position of the buffer's first token: the next window's start
        self.buffered = self.tokens = self.written_to = 0  # written_to: the end of the last window written
        self.sink = pa.ipc.new_stream(str(path), self.SCHEMA)  # the stream format `Dataset.from_file` reads

    def add(self, ids: np.ndarray) -> None:
        self.buffer.append(ids)
        self.buffered += len(ids)
        self.tokens += len(ids)
        if self.buffered >= CHUNK_TOKENS + self.block_size:
            self._write_windows(final=False)

    def close(self) -> Path:
        self._write_windows(final=True)
        self.sink.close()
        return self.path

    def _write_windows(self, final: bool) -> None:
        stream = np.concatenate(self.buffer or [np.zeros(0, np.int32)]).astype(np.int32, copy=False)
        whole = max(0, (len(stream) - self.block_size) // self.stride + 1)  # windows of a full block
        starts = list(range(0, whole * self.stride, self.stride))
        covered = self.base + starts[-1] + self.block_size if starts else self.written_to
        if final and covered < self.tokens:
            starts.append(len(starts) * self.stride)  # the last window: from its start to the stream's end
        per_batch = max(1, CHUNK_TOKENS // self.block_size)  # a chunk of tokens at a time, whatever the stride
        for first in range(0, len(starts), per_batch):
            self._write_batch(stream, starts[first : first + per_batch])
        if starts:
            self.written_to = self.base + min(starts[-1] + self.block_size, len(stream))
        rest = len(starts) * self.stride
        self.buffer, self.base, self.buffered = [stream[rest:].copy()], self.base + rest, len(stream) - rest

    def _write_batch(self, stream: np.ndarray, starts: list[int]) -> None:
        windows = [stream[start : start + self.block_size] for start in starts]  # views; one copy below
        offsets = np.cumsum([0, *map(len, windows)], dtype=np.int32)
        ids = pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(windows)))
        score_from = pa.array([self._score_from(self.base + start) for start in starts], pa.int32())
        self.sink.write_batch(pa.record_batch([ids, score_from], schema=self.SCHEMA))

    def _score_from(self, start: int) -> int:
        return 0 if start == 0 else self.block_size - self.stride


def collate_windows(examples: list[dict[str, np.ndarray]]) -> dict[str, Tensor]:
    """Windows padded on the right to the batch's longest: `input_ids`, `attention_mask` (0 on padding) and
    `labels`, -100 before each window's `score_from` and on padding (a causal model's tokens never see the padding
    after them, so it changes no prediction)."""
    longest = max(len(ex["input_ids"]) for ex in examples)
    input_ids = torch.zeros(len(examples), longest, dtype=torch.long)  # (batch, longest window)
    attention_mask = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, -100)  # -100 = ignored by the loss
    for row, ex in enumerate(examples):
        ids, start = torch.as_tensor(np.asarray(ex["input_ids"]), dtype=torch.long), int(ex["score_from"])
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
        labels[row, start : len(ids)] = ids[start:]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


# --- prompts for `predict` ------------------------------------------------------------------------------------


def tokenize_prompts(batch: dict[str, list], *, tokenizer: PreTrainedTokenizerBase, column: str) -> dict[str, list]:
    """Token ids of each prompt with the tokenizer's own special tokens (a BOS for Llama-style tokenizers; none for
    GPT-2), as `pipeline("text-generation")` tokenizes, and the prompt text (a .txt line without its line break)."""
    prompts = [text.rstrip("\r\n") for text in batch[column]]
    ids = tokenizer(prompts, verbose=False)["input_ids"]
    return {"input_ids": ids, "prompt": prompts}


def collate_prompts(examples: list[dict[str, Any]], *, pad_token_id: int) -> dict[str, Any]:
    """Prompts padded on the left, so every row's next token is at the last position, as batched decoder-only
    generation needs; `index` (position in the file) and `prompt` (text) ride along."""
    longest = max(len(ex["input_ids"]) for ex in examples)
    input_ids = torch.full((len(examples), longest), pad_token_id, dtype=torch.long)  # (batch, longest)
    attention_mask = torch.zeros((len(examples), longest), dtype=torch.long)
    for row, ex in enumerate(examples):
        n = len(ex["input_ids"])
        if n:
            input_ids[row, longest - n :] = torch.as_tensor(ex["input_ids"], dtype=torch.long)
            attention_mask[row, longest - n :] = 1
    batch: dict[str, Tensor | list[str]] = {"input_ids": input_ids, "attention_mask": attention_mask}
    batch["index"] = torch.tensor([int(ex["index"]) for ex in examples])
    batch["prompt"] = [str(ex["prompt"]) for ex in examples]
    return batch


def nonblank(texts: list[str]) -> list[bool]:
    """Rows with something to continue (a blank line in a prompts file is no prompt)."""
    return [bool(text.strip()) for text in texts]
