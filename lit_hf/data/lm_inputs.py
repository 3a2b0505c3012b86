"""Per-example transforms for language modeling: token ids of rows, fixed blocks (packed or not), their batches."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from datasets import Dataset
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from lit_hf.errors import ConfigError

# Checked in transformers 5.24 (a packed block against each document alone): OPT derives positions from the
# attention mask and BLOOM uses ALiBi, so both let attention cross documents; GPT-2 and Llama honour position_ids.
IGNORE_PACKED_POSITIONS = ("opt", "bloom")


def tokenize_text(
    batch: dict[str, list], *, tokenizer: PreTrainedTokenizerBase, text_column: str, eos_token_id: int | None = None
) -> dict[str, list]:
    """Token ids of each row as it is, special tokens included where the tokenizer adds them (as run_clm.py), and
    `eos_token_id` after every row that has tokens (a document boundary) when given."""
    ids = tokenizer(batch[text_column], verbose=False)["input_ids"]
    if eos_token_id is not None:
        ids = [row + [eos_token_id] if row else row for row in ids]
    return {"input_ids": ids}


def group_blocks(token_lists: pa.ChunkedArray, block_size: int, packing: bool = False) -> Dataset:
    """Concatenate all rows into one stream and cut it into `block_size` blocks, dropping only the remainder.

    With `packing`, each block also gets `position_ids` that restart at 0 where a row (document) starts and at the
    block's start (the part of a document cut off by the block boundary is not visible to it)."""
    stream = np.concatenate([pc.list_flatten(chunk).to_numpy() for chunk in token_lists.chunks] or [np.zeros(0)])
    usable = len(stream) // block_size * block_size
    columns = {"input_ids": pa.FixedSizeListArray.from_arrays(pa.array(stream[:usable].astype(np.int32)), block_size)}
    if packing:
        lengths = np.asarray(pc.list_value_length(token_lists), dtype=np.int64)  # tokens per row
        positions = document_positions(lengths, block_size)[:usable]
        columns["position_ids"] = pa.FixedSizeListArray.from_arrays(pa.array(positions.astype(np.int32)), block_size)
    return Dataset(pa.table(columns))


def document_positions(lengths: np.ndarray, block_size: int) -> np.ndarray:
    """Position of every token of the stream within its document, restarting at each multiple of block_size."""
    index = np.arange(int(lengths.sum()))
    starts = np.zeros(len(index), dtype=bool)
    starts[np.cumsum(lengths)[:-1][lengths[1:] > 0]] = True  # first token of each document after the first
    starts[::block_size] = True
    last_start = np.maximum.accumulate(np.where(starts, index, 0))
    return index - last_start


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
