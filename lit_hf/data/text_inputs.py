"""Per-example transforms and training order for text classification: token ids, label ids, length-grouped batches."""

from typing import Literal

import torch
from torch.utils.data import Sampler
from transformers import PreTrainedTokenizerBase
from transformers.trainer_pt_utils import get_length_grouped_indices

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
    """Token ids of each text (or text pair), cut to `max_length`; padded here only with pad_to_max_length."""
    pairs = batch[text_pair_column] if text_pair_column else None
    return tokenizer(
        batch[text_column],
        pairs,
        max_length=max_length,
        truncation=False if truncation == "do_not_truncate" else truncation,
        padding="max_length" if padding else False,
    )


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


class LengthGroupedSampler(Sampler[int]):
    """Shuffled training order in which each batch holds examples of similar length (less padding).

    The order depends only on the seed and how many times it was iterated, so every process draws the same one
    (Lightning shards it across processes).
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0) -> None:
        self.lengths, self.batch_size, self.seed, self.epoch = lengths, batch_size, seed, 0

    def __iter__(self):  # noqa: ANN204
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))

    def __len__(self) -> int:
        return len(self.lengths)
