"""What the sequence-to-sequence data modules (translation, summarization) share: padded batches of pairs and
length-sorted evaluation loaders."""

from functools import partial
from typing import Any

import lightning as L
from datasets import Dataset
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from lit_hf.data.sampling import eval_dataloader, longest_first, train_dataloader
from lit_hf.data.seq2seq_inputs import collate_pairs


def seq2seq_collate(hp: Any, tokenizer: PreTrainedTokenizerBase, trainer: L.Trainer | None) -> partial:
    """Pads to the batch's longest, to a multiple of 8 under mixed precision (tensor cores like 8s)."""
    label_pad = -100 if hp.ignore_pad_token_for_loss else tokenizer.pad_token_id
    precision = str(getattr(trainer, "precision", "")) if trainer is not None else ""
    multiple = 8 if precision.endswith("-mixed") and not hp.pad_to_max_length else None
    pads = {"pad_token_id": tokenizer.pad_token_id, "label_pad_token_id": label_pad, "pad_to_multiple_of": multiple}
    return partial(collate_pairs, **pads)


def seq2seq_train_loader(
    train: Dataset, hp: Any, tokenizer: PreTrainedTokenizerBase, trainer: L.Trainer | None
) -> DataLoader:
    collate = seq2seq_collate(hp, tokenizer, trainer)
    loader = {"batch_size": hp.batch_size, "collate_fn": collate, "num_workers": hp.num_workers}
    accumulate = getattr(trainer, "accumulate_grad_batches", 1)  # a global batch is one optimizer step
    return train_dataloader(train.remove_columns("target_text"), accumulate=accumulate, **loader)


def seq2seq_eval_loader(
    examples: Dataset, hp: Any, tokenizer: PreTrainedTokenizerBase, trainer: L.Trainer | None
) -> DataLoader:
    """Batches cut from the examples sorted by source length, longest first (`sort_by_length`), sharded."""
    return eval_dataloader(
        examples,
        batch_size=hp.eval_batch_size or hp.batch_size,
        collate_fn=seq2seq_collate(hp, tokenizer, trainer),
        num_workers=hp.num_workers,
        order=longest_first(examples) if hp.sort_by_length else None,
    )
