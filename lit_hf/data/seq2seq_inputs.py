"""Per-example transforms of the sequence-to-sequence families (translation, summarization): batches padded per
batch with their references, and documents with their summaries as token ids."""

from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from transformers import PreTrainedTokenizerBase


def tokenize_documents(
    batch: dict[str, list],
    *,
    tokenizer: PreTrainedTokenizerBase,
    text_column: str,
    summary_column: str | None,
    prefix: str,
    max_source_length: int,
    max_target_length: int,
    pad_to_max_length: bool,
    ignore_pad_token_for_loss: bool,
) -> dict[str, list]:
    """Token ids of `prefix + text` and, with a summary column, of the summary (`labels`) and its raw text.

    Every text is there (`values.check_texts` ran before); a predict file's missing summaries become "": they are
    not scored.
    """
    padding = "max_length" if pad_to_max_length else False
    sources = [prefix + text for text in batch[text_column]]
    out = dict(tokenizer(sources, max_length=max_source_length, padding=padding, truncation=True, verbose=False))
    if summary_column is not None:
        refs = [summary or "" for summary in batch[summary_column]]
        labels = tokenizer(text_target=refs, max_length=max_target_length, padding=padding, truncation=True)
        pad = tokenizer.pad_token_id
        ignore = pad_to_max_length and ignore_pad_token_for_loss  # -100 = ignored by the loss
        out["labels"] = [[-100 if ignore and t == pad else t for t in ids] for ids in labels["input_ids"]]
        out["target_text"] = refs  # ROUGE is scored against the raw text, not decoded (truncated) labels
    return out


def collate_pairs(
    examples: list[dict[str, Any]], *, pad_token_id: int, label_pad_token_id: int, pad_to_multiple_of: int | None = None
) -> dict[str, Any]:
    """Pads to the longest in the batch, rounded up to `pad_to_multiple_of` (tensor cores under mixed precision).
    Adds `index` (position in the split) and `references` when known."""

    def pad(key: str, value: int) -> Tensor:  # (batch, longest)
        rows = [torch.as_tensor(ex[key], dtype=torch.long) for ex in examples]
        padded = pad_sequence(rows, batch_first=True, padding_value=value)
        extra = -padded.shape[1] % (pad_to_multiple_of or 1)
        return torch.nn.functional.pad(padded, (0, extra), value=value)

    batch = {"input_ids": pad("input_ids", pad_token_id), "attention_mask": pad("attention_mask", 0)}
    if "labels" in examples[0]:
        batch["labels"] = pad("labels", label_pad_token_id)
    batch["index"] = torch.tensor([int(ex["index"]) for ex in examples])
    if "target_text" in examples[0]:
        batch["references"] = [str(ex["target_text"]) for ex in examples]
    return batch
