"""Per-example transforms for text classification: token ids, label ids, labels read from files."""

from typing import Literal

from datasets import Dataset
from lightning.pytorch.utilities import rank_zero_warn
from transformers import PreTrainedTokenizerBase

from lit_hf.data.base import CUT, tokenize_with_cut
from lit_hf.data.sources import load_files
from lit_hf.data.values import check_present
from lit_hf.errors import LitHFError

Truncation = Literal["longest_first", "only_first", "only_second", "do_not_truncate"]


def tokenize_pairs(
    batch: dict[str, list],
    *,
    tokenizer: PreTrainedTokenizerBase,
    text_column: str,
    text_pair_column: str | None,
    max_length: int,
    truncation: Truncation,
    padding: bool,
) -> dict[str, list]:
    """Token ids of each text (or text pair), cut to `max_length`, and `CUT` (True where an example was cut);
    padded here only with pad_to_max_length."""
    pairs = batch[text_pair_column] if text_pair_column else None
    strategy = False if truncation == "do_not_truncate" else truncation
    pad = "max_length" if padding else False
    out, cut = tokenize_with_cut(tokenizer, max_length, strategy, pad, text=batch[text_column], text_pair=pairs)
    return {**out, CUT: cut}


def encode_labels(batch: dict[str, list], *, label_column: str, label_to_id: dict[str, int] | None) -> dict[str, list]:
    """Class ids from label values as written (`"entailment"`, `"1"`, `1`); floats for regression (no table)."""
    values = batch[label_column]
    if label_to_id is None:
        return {"labels": [float(v) for v in values]}
    return {"labels": [label_to_id[str(v)] for v in values]}


def label_table(names: list[str], numbered: bool) -> dict[str, int]:
    """Name -> id; GLUE files write some labels as their id ("0", "1"), so `numbered` also maps those."""
    table = {name: i for i, name in enumerate(names)}
    return table | {str(i): i for i in range(len(names))} if numbered else table


def check_labels(raw: Dataset, column: str, table: dict[str, int] | None, names: list[str] | None, split: str) -> None:
    """Every label value of the split must be one of the known labels (regression: no table, nothing to check)."""
    if table is None:
        return
    unknown = sorted({str(v) for v in raw.unique(column)} - set(table))
    if unknown:
        raise LitHFError(
            f"The {split} split has labels {unknown[:5]} that are not among the labels ({', '.join(names or [])}); "
            "fix those rows, or add examples of them to the training file."
        )


def file_labels(files: dict[str, str], column: str, cache_dir: str | None) -> tuple[list[str] | None, bool]:
    """Sorted label values of the first given file with labels (train, validation, test); floats: regression.

    A test file alone without labels (prediction with a fine-tuned model) gives None: the model's own labels.
    """
    for split, path in files.items():
        data = load_files({split: path}, cache_dir)[split]
        if column in data.column_names:
            check_present(data, f"{split}_file {path!r}", [(column, None)])
            if data.features[column].dtype in ("float32", "float64"):
                return None, True
            return [str(v) for v in sorted(data.unique(column))], False
        if split != "test":
            raise LitHFError(
                f"{split}_file has no label column {column!r} (columns: {', '.join(data.column_names)}); "
                "set --data.label_column."
            )
    return None, False


def truncated_length(max_seq_length: int, tokenizer: PreTrainedTokenizerBase, model_limit: int | None) -> int:
    """max_seq_length, or what the tokenizer and model take if less: as run_glue.py, truncate there and say so."""
    limit = min(max_seq_length, tokenizer.model_max_length, model_limit or max_seq_length)
    if limit < max_seq_length:
        rank_zero_warn(
            f"max_seq_length {max_seq_length} is more than the model takes; texts are truncated to {limit} tokens."
        )
    return limit
