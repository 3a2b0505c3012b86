"""Prompts for causal-LM `predict`: tokenized as `pipeline("text-generation")` does, padded on the left."""

from typing import Any

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase


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
