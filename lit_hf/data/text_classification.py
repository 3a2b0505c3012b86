"""Text classification data: GLUE (hub or the original TSV layout) or the user's files, tokenized once per node."""

import functools
from functools import partial
from typing import Any

import pyarrow.compute as pc
from datasets import Dataset, DatasetDict
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding

from lit_hf.data import glue
from lit_hf.data import text_classification_inputs as text_inputs
from lit_hf.data.base import DataModule, linked_position_limit, report_cut, running_stage
from lit_hf.data.cache import file_identity
from lit_hf.data.glue import GLUE_TASKS, GlueTask, GlueTaskName, split_names
from lit_hf.data.sources import load_files, missing_split, require_columns
from lit_hf.data.text_classification_inputs import Truncation
from lit_hf.data.values import check_present, check_texts, origin
from lit_hf.errors import ConfigError, LitHFError, check_positive
from lit_hf.models import MODEL_INPUTS
from lit_hf.options import HubOptions
from lit_hf.paths import LocalPath, ModelPath


class TextClassificationDataModule(DataModule):
    """Batches of `input_ids`, `attention_mask` (`token_type_ids` where the model uses them) and `labels`.

    Sources: a GLUE task (`task_name`) from the hub or from `data_dir` in the original GLUE download layout, or
    the user's own csv/tsv/json/jsonl/parquet files. The label names (`label_names`, sorted label values for
    user files) and `regression` (STS-B, or float labels) flow to the model through the CLI. Tokenization runs
    in `prepare_data` (once per node) into a cache keyed by the source, tokenizer and options.

    Args:
        model_name_or_path: The model the data is prepared for: its tokenizer, and its config, whose position limit caps
            max_seq_length; `hub` may name others. Linked from `--model.model_name_or_path`.
        hub: Where the model's files come from; linked from `--model.hub`.
        task_name: GLUE task (`ax` is prediction only). Sets columns, labels and metrics.
        data_dir: Folder in the original GLUE download layout (`glue_data` or `glue_data/<Task>`) for task_name.
        train_file: Your own training file (.csv, .tsv, .json, .jsonl or .parquet).
        validation_file: Your own validation file, same types.
        test_file: Your own test file (read by `test`, and by `predict` without a predict_file), same types.
        predict_file: Your own examples to classify with `predict` (labels not needed), same types; with any other
            source (a GLUE task or your files). Default: the test split.
        text_column: Column with the text. Default: the GLUE task's first text column, else `text`.
        text_pair_column: Column with the second text of a pair. Default: the GLUE task's second, else none.
        label_column: Column with the label: class names or numbers (sorted for ids), or floats for regression.
        max_seq_length: Most tokens per example after tokenization; longer inputs are truncated.
        truncation: How to cut pairs that are too long (`transformers` strategies), or `do_not_truncate`.
        pad_to_max_length: Pad every example to max_seq_length instead of to the longest in its batch.
        group_by_length: Training batches of examples of similar length (shuffled), so less padding.
        max_train_samples: Keep only the first N training examples (debugging, quick runs).
        max_eval_samples: Keep only the first N examples of each validation set.
        max_predict_samples: Keep only the first N examples of each test set and of the predict_file.
        preprocessing_num_workers: Processes for tokenization.
        overwrite_cache: Tokenize again even when a cached result exists.
        data_cache_dir: Where datasets and the tokenized cache go (default: the `datasets` cache).
        batch_size: Training examples per batch per process.
        eval_batch_size: Evaluation/prediction examples per batch per process (default: batch_size).
        num_workers: DataLoader worker processes.
        seed: Seed of the training order, changed each epoch (default: the run's `seed_everything` seed).
    """

    family = "text_classification"

    def __init__(
        self,
        model_name_or_path: ModelPath | None = None,
        hub: HubOptions = HubOptions(),
        task_name: GlueTaskName | None = None,
        data_dir: LocalPath | None = None,
        train_file: LocalPath | None = None,
        validation_file: LocalPath | None = None,
        test_file: LocalPath | None = None,
        predict_file: LocalPath | None = None,
        text_column: str | None = None,
        text_pair_column: str | None = None,
        label_column: str = "label",
        max_seq_length: int = 128,
        truncation: Truncation = "longest_first",
        pad_to_max_length: bool = False,
        group_by_length: bool = False,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        max_predict_samples: int | None = None,
        preprocessing_num_workers: int | None = None,
        overwrite_cache: bool = False,
        data_cache_dir: LocalPath | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int | None = None,
    ) -> None:
        super().__init__(model_name_or_path, hub)
        if task_name is not None and task_name not in GLUE_TASKS:
            raise ConfigError(f"Unknown task_name {task_name!r}; GLUE tasks are {', '.join(GLUE_TASKS)}.")
        glue.check_glue_sources(task_name, data_dir, [train_file, validation_file, test_file], predict_file)
        check_positive(max_seq_length=max_seq_length)
        self.task: GlueTask | None = GLUE_TASKS[task_name] if task_name else None

    @property
    def label_names(self) -> list[str] | None:
        """Class names in id order; None for regression. Linked to the model by the CLI."""
        return self._labels()[0]

    @property
    def regression(self) -> bool:
        """One float output per example (STS-B, or user files with float labels). Linked to the model."""
        return self._labels()[1]

    def task_arguments(self) -> dict[str, Any]:
        return {"label_names": self.label_names, "regression": self.regression}

    def setup(self, stage: str) -> None:
        super().setup(stage)
        for split in self.splits(stage):
            if split not in self.datasets:
                raise LitHFError(f"The {split} split was not prepared; run prepare_data first.")
            scored = split != "train" and stage != "predict"
            if scored and "labels" not in self.datasets[split].column_names:
                raise LitHFError(f"The {split} split has no labels, so it cannot be scored; use `predict` for it.")

    def train_dataloader(self) -> DataLoader:
        train = self._model_inputs(self.datasets["train"])
        lengths = None
        if self.hparams.group_by_length:
            lengths = pc.list_value_length(train.data.column("input_ids")).to_pylist()
        return self.train_loader(train, lengths=lengths, seed=self.hparams.seed)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._scored_loader(split) for split in split_names(self.task, "validation") if split in self.datasets]

    def test_dataloader(self) -> list[DataLoader]:
        return [self._scored_loader(split) for split in split_names(self.task, "test")]

    def predict_dataloader(self) -> list[DataLoader]:
        return [self.eval_loader(split) for split in self.splits("predict")]  # with `index`

    def load_raw(self) -> DatasetDict:
        """The splits the stage reads (and the calibration split, `read_splits`): the predict file's, and the others
        from your files or the GLUE task."""
        hp, files = self.hparams, self._data_files()
        splits = [s for s in self.read_splits() if s != "predict"]
        raw = load_files({"predict": hp.predict_file} if "predict" in self.splits() else {}, hp.data_cache_dir)
        if files:
            raw.update(load_files(files, hp.data_cache_dir))
        elif splits and self.task is not None:
            raw.update(glue.load_glue(self.task, hp.task_name, hp.data_dir, splits, hp.data_cache_dir))
        return raw

    def build(self, raw: DatasetDict, split: str, tag: str) -> Dataset:
        if split not in raw and running_stage(self.trainer) == "predict":  # the test split stands in for a file
            raise LitHFError(f"The data has no {split} split (it has: {', '.join(raw) or 'none'}); "
                             "give the examples to classify with --data.predict_file.")  # fmt: skip
        if split not in raw:
            raise missing_split(split, raw)
        return self._tokenize(raw[split], split, tag)

    def cache_key(self, split: str) -> dict[str, Any]:
        hp = self.hparams
        if split == "predict":
            source: Any = ["files", file_identity(hp.predict_file)]
        elif files := self._data_files():
            source = ["files", file_identity(files[split]) if split in files else None]
        else:
            source = glue.glue_identity(self.task, hp.task_name, hp.data_dir, split)
        return {
            "source": source,
            "columns": self._columns(),
            "labels": self._label_to_id(),
            "max_length": self._max_length,
            "truncation": hp.truncation,
            "pad_to_max_length": hp.pad_to_max_length,
        }

    def collate(self, split: str) -> DataCollatorWithPadding:
        return DataCollatorWithPadding(self.tokenizer, pad_to_multiple_of=self.pad_multiple())

    def splits(self, stage: str | None = None) -> list[str]:
        """The splits a trainer entry point reads; without one, those of the running trainer, else all there are.
        `predict` reads the predict_file (split `predict`) where one is given, else the test split(s)."""
        stage = stage or running_stage(self.trainer)
        predict = ["predict"] if self.hparams.predict_file else []
        if stage == "predict" and predict:
            return predict
        splits = glue.classification_splits(self.task, stage, self.hparams.data_dir, self._data_files())
        return splits if stage else splits + predict

    def limit(self, split: str) -> int | None:
        hp = self.hparams
        if split == "train":
            return hp.max_train_samples
        return hp.max_predict_samples if split.startswith("test") or split == "predict" else hp.max_eval_samples

    def _scored_loader(self, split: str) -> DataLoader:
        return self.eval_loader(split, self._model_inputs(self.datasets[split]))

    def _model_inputs(self, dataset: Dataset) -> Dataset:
        return dataset.select_columns([c for c in MODEL_INPUTS if c in dataset.column_names])

    def _columns(self) -> tuple[str, str | None, str]:
        hp, task = self.hparams, self.task
        text = hp.text_column or (task.text if task else "text")
        pair = hp.text_pair_column or (task.pair if task else None)
        label = "label" if task and not self._data_files() else hp.label_column
        return text, pair, label

    def _tokenize(self, raw: Dataset, split: str, tag: str) -> Dataset:
        hp = self.hparams
        text, pair, label = self._columns()
        require_columns(raw, split, {text: "text_column", pair: "text_pair_column"})
        where = origin(split, self.files(), None, None)
        check_texts(raw, where, [(text, None), *([(pair, None)] if pair else [])])
        if split == "predict" and label in raw.column_names:  # predictions need no labels: the file's are ignored
            raw = raw.remove_columns(label)
        if label in raw.column_names:
            check_present(raw, where, [(label, None)])
            text_inputs.check_labels(raw, label, self._label_to_id(), self.label_names, split)
        elif not split.startswith("test") and split != "predict":
            raise LitHFError(f"The {split} split has no label column {label!r}; set --data.label_column.")
        tokenize = partial(
            text_inputs.tokenize_pairs,
            tokenizer=self.tokenizer,
            text_column=text,
            text_pair_column=pair,
            max_length=self._max_length,
            truncation=hp.truncation,
            padding=hp.pad_to_max_length,
        )
        examples = report_cut(self.map_batched(raw, tokenize, tag, "tokenize", drop=False), split, self._max_length)
        if label in raw.column_names:
            encode = partial(text_inputs.encode_labels, label_column=label, label_to_id=self._label_to_id())
            examples = self.map_batched(examples, encode, tag, "labels", drop=False)
        examples = self._model_inputs(examples)
        return examples.add_column("index", list(range(len(examples))))  # input order, for prediction files

    def _label_to_id(self) -> dict[str, int] | None:
        names = self.label_names
        return None if names is None else text_inputs.label_table(names, numbered=self.task is not None)

    @functools.cache  # noqa: B019 (one data module per run; the label column is read once)
    def _labels(self) -> tuple[list[str] | None, bool]:
        """(label names, regression): the GLUE task's, else read from the user's files."""
        if self.task is not None:
            return (list(self.task.labels) if self.task.labels else None), self.task.labels is None
        return text_inputs.file_labels(self._data_files(), self.hparams.label_column, self.hparams.data_cache_dir)

    def _data_files(self) -> dict[str, str]:
        """Your train/validation/test files: the data, in place of a GLUE task's (a predict_file is read beside
        either)."""
        return {split: path for split, path in self.files().items() if split != "predict"}

    @functools.cached_property
    def _max_length(self) -> int:
        """max_seq_length, or less where the tokenizer and the model take less: decided once per run."""
        limit = linked_position_limit(self.model_name_or_path, self.hub)
        return text_inputs.truncated_length(self.hparams.max_seq_length, self.tokenizer, limit)


class GlueDataModule(TextClassificationDataModule):
    """`TextClassificationDataModule` under the name GLUE configs read best with (`--data.task_name=rte`). A class of
    its own, not an alias: `--data=GlueDataModule` finds a class by its `__name__`, and `fit --help` lists it."""
