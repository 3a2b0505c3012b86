"""Per-example transforms for language modeling: token ids of rows, fixed blocks (packed or not), their batches."""

import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from datasets import Dataset
from datasets.fingerprint import get_temporary_cache_files_directory
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from lit_hf.data.lm_blocks import document_positions, group_pieces, list_pieces  # noqa: F401 (re-exported)
from lit_hf.errors import ConfigError

# Checked in transformers 5.24 (a packed block against each document alone): OPT derives positions from the
# attention mask and BLOOM uses ALiBi, so both let attention cross documents; GPT-2 and Llama honour position_ids.
IGNORE_PACKED_POSITIONS = ("opt", "bloom")


def tokenize_text(
    batch: dict[str, list], *, tokenizer: PreTrainedTokenizerBase, text_column: str, eos_token_id: int | None = None
) -> dict[str, list]:
    """Token ids of each row as it is, special tokens included where the tokenizer adds them (as run_clm.py), and
    `eos_token_id` after every row that has tokens (a document boundary) when given."""
    ids = tokenizer(batch[text_column], return_attention_mask=False, verbose=False)["input_ids"]
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
