"""Per-example transforms for multiple choice: each example's choices as token ids, and batches padded per batch."""

from typing import Any

import pyarrow.compute as pc
import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from lit_hf.data.base import CUT, tokenize_with_cut
from lit_hf.data.values import check_texts
from lit_hf.errors import LitHFError

# SWAG's columns (allenai/swag `regular` on the hub, and its json dumps such as shared/data/swag/sample.json):
# `sent1` is the context, `sent2` the start of the second sentence that each of `ending0..3` completes.
SWAG_CONTEXT = "sent1"
SWAG_QUESTION = "sent2"
SWAG_ENDINGS = ("ending0", "ending1", "ending2", "ending3")

UNLABELLED = -1  # SWAG's hub test split marks its hidden labels -1


def choices_of(batch: dict[str, list], ending_columns: list[str] | None, choices_column: str | None) -> list[list[str]]:
    """Each example's choices: one column per choice (SWAG) or one column holding a list (the generic layout)."""
    if choices_column is not None:
        return [list(choices) for choices in batch[choices_column]]
    return [list(endings) for endings in zip(*(batch[column] for column in ending_columns or ()), strict=True)]


def tokenize_choices(
    batch: dict[str, list],
    *,
    tokenizer: PreTrainedTokenizerBase,
    context_column: str,
    question_column: str | None,
    ending_columns: list[str] | None,
    choices_column: str | None,
    num_choices: int,
    max_length: int,
    padding: bool,
) -> dict[str, list]:
    """Token ids of (context, question + " " + choice) for every choice, as run_swag.py pairs them.

    Each output row holds `num_choices` lists (input_ids: (num_choices, its length)); `choices` keeps the texts for
    prediction files; `CUT` is True where a choice was cut. Every example has `num_choices` choices
    (`check_choice_counts` ran before).
    """
    choices = choices_of(batch, ending_columns, choices_column)
    questions = batch[question_column] if question_column else [None] * len(choices)
    firsts = [context for context in batch[context_column] for _ in range(num_choices)]
    seconds = [f"{q} {c}" if q else c for q, options in zip(questions, choices, strict=True) for c in options]
    padding_mode = "max_length" if padding else False
    flat, cut = tokenize_with_cut(tokenizer, max_length, True, padding_mode, text=firsts, text_pair=seconds)
    out = {
        key: [values[i : i + num_choices] for i in range(0, len(values), num_choices)] for key, values in flat.items()
    }
    out["choices"] = choices
    out[CUT] = [any(cut[i : i + num_choices]) for i in range(0, len(cut), num_choices)]  # any of its choices cut
    return out


def check_choices(raw: Dataset, where: str, columns: tuple[str, str | None, list[str] | None, str | None]) -> None:
    """Every row must have its context, question (when used) and each choice: `columns` are the data module's
    (context, question, ending columns, choices column). A missing one is an error naming `where` and the row."""
    context, question, endings, choices = columns
    texts = [context, *([question] if question else []), *(endings or []), *([choices] if choices else [])]
    check_texts(raw, where, [(column, None) for column in texts])


def check_choice_counts(raw: Dataset, where: str, choices: str, num_choices: int) -> None:
    """In the generic layout, every row's list must hold `num_choices` choices."""
    counts = pc.list_value_length(raw.with_format("arrow")[choices])
    row = pc.index(pc.not_equal(counts, num_choices), True).as_py()
    if row >= 0:
        raise LitHFError(
            f"{where}, row {row + 1} has {counts[row].as_py()} choices, not {num_choices}; every example needs the "
            "same number (set --data.num_choices, or fix the data)."
        )


def check_choice_labels(raw: Dataset, where: str, column: str, num_choices: int) -> None:
    """Every label must be a choice index 0..num_choices-1, or -1 (unlabelled, as SWAG's test split)."""
    indices = {*range(num_choices), UNLABELLED}
    for row, value in enumerate(raw[column]):
        if value is None:
            raise LitHFError(f"{where}, row {row + 1}: {column!r} is missing; fill it in or remove the row.")
        if choice_index(value) not in indices:
            raise LitHFError(
                f"{where}, row {row + 1}: label {value!r} is not among the choice indices 0..{num_choices - 1}; set "
                "--data.label_column to the column of the correct choice's index."
            )


def choice_index(value: Any) -> int | None:
    """A label as a choice index: an int, or a number or text that is one (2.0, "2"); None for anything else."""
    try:
        index = int(float(value))
    except (TypeError, ValueError):
        return None
    return index if float(value) == index else None


def encode_choice_labels(batch: dict[str, list], *, label_column: str) -> dict[str, list]:
    """Label indices as ints (`check_choice_labels` checked them; -1: unlabelled, as SWAG's test split)."""
    return {"labels": [choice_index(value) for value in batch[label_column]]}


def collate_choices(
    examples: list[dict[str, Any]], *, tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int | None
) -> dict[str, Any]:
    """All choices of the batch padded to the batch's longest: `input_ids` etc. (batch, num_choices, longest).

    Adds `labels` where every example has one, `index` (position in the split) and `choices` (the texts).
    """
    keys = [key for key in ("input_ids", "attention_mask", "token_type_ids") if key in examples[0]]
    num_choices = len(examples[0]["input_ids"])
    flat = [{key: ex[key][c] for key in keys} for ex in examples for c in range(num_choices)]
    padded = tokenizer.pad(flat, padding=True, pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt")
    batch: dict[str, Any] = {key: padded[key].view(len(examples), num_choices, -1) for key in keys}
    labels = [int(ex["labels"]) for ex in examples] if "labels" in examples[0] else []
    if labels and UNLABELLED not in labels:
        batch["labels"] = torch.tensor(labels)
    batch["index"] = torch.tensor([int(ex["index"]) for ex in examples])
    batch["choices"] = [list(ex["choices"]) for ex in examples]
    return batch
