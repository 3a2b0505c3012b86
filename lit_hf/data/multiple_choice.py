"""Multiple-choice data: SWAG from the hub or its json/csv dumps, or a generic layout, tokenized once per node."""

import functools
from functools import partial
from typing import Any

from datasets import Dataset, DatasetDict

from lit_hf.data.base import DataModule, capped_length, linked_position_limit, report_cut
from lit_hf.data.multiple_choice_inputs import (
    SWAG_CONTEXT,
    SWAG_ENDINGS,
    SWAG_QUESTION,
    UNLABELLED,
    check_choice_counts,
    check_choice_labels,
    check_choices,
    collate_choices,
    encode_choice_labels,
    tokenize_choices,
)
from lit_hf.data.sources import check_sources, require_columns
from lit_hf.errors import LitHFError, check_positive
from lit_hf.options import HubOptions
from lit_hf.paths import LocalPath, ModelPath


class MultipleChoiceDataModule(DataModule):
    """Batches of `input_ids`, `attention_mask` (and `token_type_ids`), each (batch, num_choices, longest), `labels`
    (the correct choice's index), `index` (position in the split) and `choices` (the choice texts).

    Layouts: SWAG's (`sent1` the context, `sent2` the start every `ending0..3` completes, `label`), from the hub
    (`allenai/swag`, `regular`) or json/jsonl/csv/parquet files; or a generic one: a context column, a column holding
    the list of choices (`choices_column`) and a label index. Each choice is tokenized as the pair (context,
    question + " " + choice), as run_swag.py does, in `prepare_data` (once per node) into a cache; `setup` loads it
    on every process. All choices of a batch are padded to the batch's longest (to a multiple of 8 under mixed
    precision).

    Args:
        model_name_or_path: The model the data is prepared for: its tokenizer, and its config, whose position limit caps
            max_seq_length; `hub` may name others. Linked from `--model.model_name_or_path`.
        hub: Where the model's files come from; linked from `--model.hub`.
        dataset_name: Hub dataset id, e.g. `allenai/swag`. Local files win when both are given.
        dataset_config_name: Hub dataset configuration, e.g. `regular`.
        train_file: Local training examples (.json, .jsonl, .csv or .parquet).
        validation_file: Local validation examples, same types.
        test_file: Local test examples (read by `test`, and by `predict` without a predict_file), same types.
        predict_file: Examples to choose for with `predict` (labels not needed), same types.
        dataset_path: A DatasetDict written by `save_to_disk`.
        context_column: Column of the context (first sentence). Default: `sent1`, or `context` with choices_column.
        question_column: Column of the text every choice continues (`sent2` in SWAG; default: it with the ending
            columns, none with choices_column); "" for none.
        ending_columns: One column per choice. Default: SWAG's `ending0`..`ending3`.
        choices_column: Column holding each example's list of choices (the generic layout, instead of ending_columns).
        label_column: Column of the correct choice's index (0-based).
        num_choices: Choices per example; every example must have this many. Default: the number of ending columns,
            or the first example's list length.
        max_seq_length: Most tokens per (context, choice) pair; longer ones are truncated. Default: min(1024, the
            tokenizer's and the model's limit).
        pad_to_max_length: Pad every choice to max_seq_length instead of to the longest in its batch.
        max_train_samples: Keep only the first N training examples (debugging, quick runs).
        max_eval_samples: Keep only the first N validation/test examples.
        max_predict_samples: Keep only the first N examples to predict.
        preprocessing_num_workers: Processes for tokenization.
        overwrite_cache: Tokenize again even when a cached result exists.
        data_cache_dir: Where datasets and the tokenized cache go (default: the `datasets` cache).
        batch_size: Training examples (each with all its choices) per batch per process.
        eval_batch_size: Evaluation examples per batch per process (default: batch_size).
        num_workers: DataLoader worker processes.
    """

    family = "multiple_choice"

    def __init__(
        self,
        model_name_or_path: ModelPath | None = None,
        hub: HubOptions = HubOptions(),
        dataset_name: str | None = None,
        dataset_config_name: str | None = None,
        train_file: LocalPath | None = None,
        validation_file: LocalPath | None = None,
        test_file: LocalPath | None = None,
        predict_file: LocalPath | None = None,
        dataset_path: LocalPath | None = None,
        context_column: str | None = None,
        question_column: str | None = None,
        ending_columns: list[str] | None = None,
        choices_column: str | None = None,
        label_column: str = "label",
        num_choices: int | None = None,
        max_seq_length: int | None = None,
        pad_to_max_length: bool = False,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        max_predict_samples: int | None = None,
        preprocessing_num_workers: int | None = None,
        overwrite_cache: bool = False,
        data_cache_dir: LocalPath | None = None,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__(model_name_or_path, hub)
        check_sources(dataset_name or predict_file, dataset_path, [train_file, validation_file, test_file])
        check_positive(num_choices=num_choices, max_seq_length=max_seq_length)
        if choices_column and ending_columns:
            raise LitHFError("Give either choices_column (a list per example) or ending_columns, not both.")
        if ending_columns is not None and len(ending_columns) < 2:
            raise LitHFError(f"ending_columns needs at least two columns, got {ending_columns}.")

    def setup(self, stage: str) -> None:
        super().setup(stage)
        for split in ("validation", "test"):
            if stage in ("validate", "test", "fit") and split in self.datasets and not self._labelled(split):
                raise LitHFError(f"The {split} split has no labels, so it cannot be scored; use `predict` for it.")

    def load_raw(self) -> DatasetDict:
        return self.load_files_or_hub()

    def build(self, raw: DatasetDict, split: str, tag: str) -> Dataset | None:
        rows = self.optional_split(raw, split)
        return None if rows is None else self._tokenize(rows, split, tag)

    def cache_key(self, split: str) -> dict[str, Any]:
        hp = self.hparams
        return {
            "source": self.source(split),
            "columns": [*self._columns(), hp.label_column, hp.num_choices],
            "max_length": self._max_length,
            "padding": hp.pad_to_max_length,
        }

    def collate(self, split: str) -> partial:
        return partial(collate_choices, tokenizer=self.tokenizer, pad_to_multiple_of=self.pad_multiple())

    def _labelled(self, split: str) -> bool:
        data = self.datasets[split]
        return "labels" in data.column_names and UNLABELLED not in data.unique("labels")

    def _columns(self) -> tuple[str, str | None, list[str] | None, str | None]:
        """(context, question or None, ending columns or None, choices column or None)."""
        hp = self.hparams
        if hp.choices_column:
            return hp.context_column or "context", hp.question_column or None, None, hp.choices_column
        question = SWAG_QUESTION if hp.question_column is None else hp.question_column or None
        return hp.context_column or SWAG_CONTEXT, question, list(hp.ending_columns or SWAG_ENDINGS), None

    def _num_choices(self, raw: Dataset) -> int:
        _, _, endings, choices = self._columns()
        return self.hparams.num_choices or (len(endings) if endings else len(raw[0][choices]))

    def _tokenize(self, raw: Dataset, split: str, tag: str) -> Dataset:
        hp = self.hparams
        context, question, endings, choices = self._columns()
        columns = {context: "context_column", question: "question_column", choices: "choices_column"}
        require_columns(raw, split, {**columns, **{column: "ending_columns" for column in endings or ()}})
        where = self.origin(split)
        check_choices(raw, where, self._columns())
        num_choices = self._num_choices(raw)
        if choices:
            check_choice_counts(raw, where, choices, num_choices)
        if hp.label_column in raw.column_names:
            check_choice_labels(raw, where, hp.label_column, num_choices)
        fn = partial(
            tokenize_choices,
            tokenizer=self.tokenizer,
            context_column=context,
            question_column=question,
            ending_columns=endings,
            choices_column=choices,
            num_choices=num_choices,
            max_length=self._max_length,
            padding=hp.pad_to_max_length,
        )
        examples = report_cut(self.map_batched(raw, fn, tag, "tokenize", drop=False), split, self._max_length)
        if hp.label_column in raw.column_names:
            encode = partial(encode_choice_labels, label_column=hp.label_column)
            examples = self.map_batched(examples, encode, tag, "labels", drop=False)
        elif split != "predict":
            raise LitHFError(f"The {split} split has no label column {hp.label_column!r}; set --data.label_column.")
        keep = ("input_ids", "attention_mask", "token_type_ids", "labels", "choices")
        examples = examples.select_columns([c for c in keep if c in examples.column_names])
        return examples.add_column("index", list(range(len(examples))))  # input order, for prediction files

    @functools.cached_property
    def _max_length(self) -> int:
        """max_seq_length, or its default from the tokenizer and the model: decided once per run."""
        limit = linked_position_limit(self.model_name_or_path, self.hub)
        return capped_length(self.hparams.max_seq_length, self.tokenizer, limit, "max_seq_length")
