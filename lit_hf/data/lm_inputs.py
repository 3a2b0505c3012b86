"""Per-example transforms for language modeling: token ids of rows, fixed blocks (packed or not), their batches."""

import uuid
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from datasets import Dataset
from datasets.fingerprint import get_temporary_cache_files_directory
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from lit_hf.data.encode import encode_texts
from lit_hf.data.lm_blocks import document_positions, group_pieces, list_pieces, tokenized_pieces  # noqa: F401
from lit_hf.data.sources import require_columns
from lit_hf.data.strided import group_windows
from lit_hf.errors import ConfigError, LitHFError

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


def group_blocks(token_lists: pa.ChunkedArray, block_size: int, packing: bool = False) -> Dataset:
    """Concatenate all rows into one stream and cut it into `block_size` blocks, dropping only the remainder,
    chunk by chunk into a temporary Arrow file (`lm_blocks.group_pieces`, which says what `packing` adds)."""
    path = Path(get_temporary_cache_files_directory()) / f"blocks-{uuid.uuid4().hex}.arrow"
    return group_pieces(list_pieces(token_lists), block_size, packing, path)[0]


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
    evaluation windows instead of blocks (`strided.group_windows`)."""
    column = hparams["text_column"]
    require_columns(raw, split, {column: "text_column"})
    eos = document_separator(tokenizer, hparams["add_eos_between_documents"])
    tokenize = partial(tokenize_text, tokenizer=tokenizer, text_column=column, eos_token_id=eos)
    pieces = tokenized_pieces(raw, column, tokenize, hparams["preprocessing_num_workers"])
    if stride is not None:
        windows, n = group_windows(pieces, size, stride, path, total=len(raw), desc=f"Tokenize and window {split}")
        if n < 2:
            raise LitHFError(f"The {split} split has {n} tokens; strided evaluation needs 2 or more: add text.")
        return windows
    desc = f"Tokenize and group {split}"
    blocks, n = group_pieces(pieces, size, hparams["packing"], path, total=len(raw), desc=desc)
    if len(blocks) == 0:
        raise LitHFError(
            f"The {split} split has {n} tokens, fewer than one block of {size}; lower --data.block_size or add text."
        )
    return blocks
