"""Prompts for causal-LM `predict`: tokenized as `pipeline("text-generation")` does, padded on the left."""

from functools import partial
from typing import Any

import torch
from datasets import Dataset
from torch import Tensor
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from lit_hf.data.prepared import map_batched
from lit_hf.data.sampling import eval_dataloader, longest_first
from lit_hf.data.sources import loader_for, require_columns
from lit_hf.data.values import check_texts
from lit_hf.errors import LitHFError


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


def prepare_prompts(raw: Dataset, hp: Any, tokenizer: PreTrainedTokenizerBase, tag: str) -> Dataset:
    """The predict file's non-blank prompts, tokenized, with `index` (position among them): a .txt file's lines, or
    the `prompt_column` of a jsonl/json/csv/parquet file."""
    column = "text" if loader_for(hp.predict_file, "text") == "text" else hp.prompt_column
    require_columns(raw, "predict", {column: "prompt_column"})
    check_texts(raw, f"predict_file {hp.predict_file!r}", [(column, None)])
    raw = raw.filter(nonblank, input_columns=column, batched=True, new_fingerprint=f"{tag}-nonblank")
    if len(raw) == 0:
        raise LitHFError(f"predict_file {hp.predict_file!r} holds no prompts.")
    tokenize = partial(tokenize_prompts, tokenizer=tokenizer, column=column)
    prompts = map_batched(raw, tokenize, tag, "tokenize", hp, drop=True)
    return prompts.add_column("index", list(range(len(prompts))))


def prompt_loader(prompts: Dataset, hp: Any, tokenizer: PreTrainedTokenizerBase) -> DataLoader:
    """Left-padded batches of prompts, longest first (less padding; `index` restores file order), sharded."""
    return eval_dataloader(
        prompts,
        batch_size=hp.eval_batch_size or hp.batch_size,
        collate_fn=partial(collate_prompts, pad_token_id=tokenizer.pad_token_id),
        num_workers=hp.num_workers,
        order=longest_first(prompts),
    )
