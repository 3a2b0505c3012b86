"""Strided (sliding-window) evaluation windows: `block_size` tokens of a split's token stream every `stride` tokens,
each scoring only the tokens no earlier window scored, as the Hugging Face guide "Perplexity of fixed-length models"
computes perplexity."""

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from datasets import Dataset
from datasets.utils.tqdm import tqdm
from torch import Tensor

from lit_hf.data.lm_blocks import CHUNK_TOKENS, Piece
from lit_hf.errors import ConfigError


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


def group_windows(
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
