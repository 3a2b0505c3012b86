"""Text classification data: GLUE (hub or the original TSV layout) or the user's files, tokenized once per node."""

import functools
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, load_from_disk
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, DataCollatorWithPadding, PreTrainedTokenizerBase

from lit_hf.data.cache import cache_path, file_identity, is_cached, save_atomically, tokenizer_identity
from lit_hf.data.glue import GLUE_TASKS, GlueTask, GlueTaskName, glue_file, read_glue_tsv, split_names
from lit_hf.data.sampling import eval_dataloader
from lit_hf.data.sources import check_files, load_files, load_hub
from lit_hf.data.text_inputs import LengthGroupedSampler, Truncation, encode_labels, label_table, tokenize_pairs
from lit_hf.errors import ConfigError, LitHFError
from lit_hf.hub import from_hub
from lit_hf.models import position_limit

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "labels")


class TextClassificationDataModule(L.LightningDataModule):
    """Batches of `input_ids`, `attention_mask` (`token_type_ids` where the model uses them) and `labels`.

    Sources: a GLUE task (`task_name`) from the hub or from `data_dir` in the original GLUE download layout, or
    the user's own csv/tsv/json/jsonl/parquet files. The label names (`label_names`, sorted label values for
    user files) and `regression` (STS-B, or float labels) flow to the model through the CLI. Tokenization runs
    in `prepare_data` (once per node) into a cache keyed by the source, tokenizer and options.

    Args:
        tokenizer_name_or_path: Tokenizer to load; the CLI links it to the model's (or `--model.tokenizer_name`).
        config_name_or_path: Model config whose position limit caps max_seq_length; linked by the CLI.
        revision: Hub revision of the tokenizer and config; linked to the model's.
        trust_remote_code: Allow tokenizer code from the hub; linked to the model's.
        task_name: GLUE task (`ax` is prediction only). Sets columns, labels and metrics.
        data_dir: Folder in the original GLUE download layout (`glue_data` or `glue_data/<Task>`) for task_name.
        train_file: Your own training file (.csv, .tsv, .json, .jsonl or .parquet).
        validation_file: Your own validation file, same types.
        test_file: Your own test file (read by `test` and `predict`), same types.
        text_column: Column with the text. Default: the GLUE task's first text column, else `text`.
        text_pair_column: Column with the second text of a pair. Default: the GLUE task's second, else none.
        label_column: Column with the label: class names or numbers (sorted for ids), or floats for regression.
        max_seq_length: Most tokens per example after tokenization; longer inputs are truncated.
        truncation: How to cut pairs that are too long (`transformers` strategies), or `do_not_truncate`.
        pad_to_max_length: Pad every example to max_seq_length instead of to the longest in its batch.
        group_by_length: Training batches of examples of similar length (shuffled), so less padding.
        max_train_samples: Keep only the first N training examples (debugging, quick runs).
        max_eval_samples: Keep only the first N examples of each validation set.
        max_predict_samples: Keep only the first N examples of each test set (read by `test` and `predict`).
        preprocessing_num_workers: Processes for tokenization.
        overwrite_cache: Tokenize again even when a cached result exists.
        data_cache_dir: Where datasets and the tokenized cache go (default: the `datasets` cache).
        batch_size: Training examples per batch per process.
        eval_batch_size: Evaluation/prediction examples per batch per process (default: batch_size).
        num_workers: DataLoader worker processes.
        seed: Seed of the length-grouped training order.
    """

    def __init__(
        self,
        tokenizer_name_or_path: str,
        config_name_or_path: str | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
        task_name: GlueTaskName | None = None,
        data_dir: str | None = None,
        train_file: str | None = None,
        validation_file: str | None = None,
        test_file: str | None = None,
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
        data_cache_dir: str | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 42,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if task_name is not None and task_name not in GLUE_TASKS:
            raise ConfigError(f"Unknown task_name {task_name!r}; GLUE tasks are {', '.join(GLUE_TASKS)}.")
        files = train_file or validation_file or test_file
        if data_dir and not task_name:
            raise ConfigError("data_dir holds GLUE files; name the task with task_name.")
        if data_dir and files:
            raise ConfigError("Give either data_dir (GLUE layout) or train_file/validation_file/test_file, not both.")
        if not (task_name or files):
            raise ConfigError("Give a data source: task_name (GLUE, hub or data_dir) or train_file/validation_file.")
        if max_seq_length < 1:
            raise ConfigError(f"max_seq_length must be positive, got {max_seq_length}.")
        self.task: GlueTask | None = GLUE_TASKS[task_name] if task_name else None
        self.datasets: dict[str, Dataset] = {}

    @property
    def label_names(self) -> list[str] | None:
        """Class names in id order; None for regression. Linked to the model by the CLI."""
        if self.task is not None:
            return list(self.task.labels) if self.task.labels else None
        return self._file_labels()[0]

    @property
    def regression(self) -> bool:
        """One float output per example (STS-B, or user files with float labels). Linked to the model."""
        if self.task is not None:
            return self.task.labels is None
        return self._file_labels()[1]

    def prepare_data(self) -> None:
        tokenizer = self._load_tokenizer()
        raw: DatasetDict | None = None
        for split in self._splits():
            path, key = self._cache(split, tokenizer)
            if is_cached(path) and not self.hparams.overwrite_cache:
                continue
            raw = raw if raw is not None else self._load_raw()
            if split not in raw:
                raise LitHFError(f"The data has no {split} split (it has: {', '.join(raw) or 'none'}).")
            limit = self._limit(split)
            examples = raw[split] if limit is None else raw[split].select(range(min(limit, len(raw[split]))))
            examples = self._tokenize(examples, split, tokenizer)
            save_atomically(DatasetDict({split: examples}), path, key)

    def setup(self, stage: str) -> None:
        self.tokenizer = self._load_tokenizer()
        for split in self._splits(stage):
            self.datasets[split] = load_from_disk(str(self._cache(split, self.tokenizer)[0]))[split]
            scored = split != "train" and stage != "predict"
            if scored and "labels" not in self.datasets[split].column_names:
                raise LitHFError(f"The {split} split has no labels, so it cannot be scored; use `predict` for it.")

    def train_dataloader(self) -> DataLoader:
        train = self._model_inputs(self.datasets["train"])
        sampler = None
        if self.hparams.group_by_length:
            lengths = pc.list_value_length(train.data.column("input_ids")).to_pylist()
            sampler = LengthGroupedSampler(lengths, self.hparams.batch_size, self.hparams.seed)
        return DataLoader(
            train,
            batch_size=self.hparams.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            collate_fn=self._collator(),
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def val_dataloader(self) -> list[DataLoader]:
        return [self._eval_loader(split) for split in split_names(self.task, "validation") if split in self.datasets]

    def test_dataloader(self) -> list[DataLoader]:
        return [self._eval_loader(split) for split in split_names(self.task, "test")]

    def predict_dataloader(self) -> list[DataLoader]:
        return [self._eval_loader(split, keep_index=True) for split in split_names(self.task, "test")]

    def _eval_loader(self, split: str, keep_index: bool = False) -> DataLoader:
        dataset = self.datasets[split] if keep_index else self._model_inputs(self.datasets[split])
        return eval_dataloader(
            dataset,
            batch_size=self.hparams.eval_batch_size or self.hparams.batch_size,
            collate_fn=self._collator(),
            num_workers=self.hparams.num_workers,
        )

    def _collator(self) -> DataCollatorWithPadding:
        precision = str(getattr(self.trainer, "precision", "")) if self.trainer is not None else ""
        multiple = 8 if precision.endswith("-mixed") and not self.hparams.pad_to_max_length else None
        return DataCollatorWithPadding(self.tokenizer, pad_to_multiple_of=multiple)  # tensor cores like 8s

    def _model_inputs(self, dataset: Dataset) -> Dataset:
        return dataset.select_columns([c for c in MODEL_INPUTS if c in dataset.column_names])

    def _splits(self, stage: str | None = None) -> list[str]:
        """The splits a trainer entry point reads; without one, those of the running trainer, else all there are."""
        if stage is None and self.trainer is not None:
            fn = self.trainer.state.fn
            stage = getattr(fn, "value", fn)
        train, validation, test = ["train"], split_names(self.task, "validation"), split_names(self.task, "test")
        if self.hparams.task_name == "ax":  # the diagnostic set has only a test file
            train, validation = [], []
        if self._files() and "validation" not in self._files():  # validation is optional for your own files
            validation = []
        if self.hparams.data_dir and len(validation) > 1:  # MNLI: score the dev files there are (error if none)
            there = [s for s in validation if glue_file(self.hparams.data_dir, self.task, s).is_file()]
            validation = there or validation
        by_stage = {"fit": train + validation, "validate": validation, "test": test, "predict": test}
        if stage in by_stage:
            return by_stage[stage]
        if self._files():
            return [s for s in train + validation + test if s in self._files()]
        if self.hparams.data_dir:
            return [s for s in train + validation + test if glue_file(self.hparams.data_dir, self.task, s).is_file()]
        return train + validation + test

    def _files(self) -> dict[str, str]:
        hp = self.hparams
        return check_files({"train": hp.train_file, "validation": hp.validation_file, "test": hp.test_file})

    def _load_raw(self) -> DatasetDict:
        hp = self.hparams
        if self._files():
            return load_files(self._files(), hp.data_cache_dir)
        if hp.data_dir:
            splits = ["train", *split_names(self.task, "validation"), *split_names(self.task, "test")]
            wanted = [s for s in splits if s in self._splits()]
            return DatasetDict({s: read_glue_tsv(glue_file(hp.data_dir, self.task, s), self.task, s) for s in wanted})
        raw = load_hub("nyu-mll/glue", hp.task_name, None, hp.data_cache_dir)
        for split in list(raw):  # the hub's test splits carry -1 for "no label"
            if "label" in raw[split].column_names and raw[split].unique("label") == [-1]:
                raw[split] = raw[split].remove_columns("label")
        return raw

    def _limit(self, split: str) -> int | None:
        hp = self.hparams
        if split == "train":
            return hp.max_train_samples
        return hp.max_predict_samples if split.startswith("test") else hp.max_eval_samples

    def _columns(self) -> tuple[str, str | None, str]:
        hp, task = self.hparams, self.task
        text = hp.text_column or (task.text if task else "text")
        pair = hp.text_pair_column or (task.pair if task else None)
        label = "label" if task and not self._files() else hp.label_column
        return text, pair, label

    def _tokenize(self, raw: Dataset, split: str, tokenizer: PreTrainedTokenizerBase) -> Dataset:
        text, pair, label = self._columns()
        for column in (text, pair):
            if column and column not in raw.column_names:
                raise LitHFError(
                    f"The {split} split has no column {column!r} (columns: {', '.join(raw.column_names)}); "
                    "set --data.text_column / --data.text_pair_column."
                )
        if len(raw) == 0:
            raise LitHFError(f"The {split} split is empty.")
        workers, fresh = self.hparams.preprocessing_num_workers, not self.hparams.overwrite_cache
        labelled = label in raw.column_names
        if not labelled and not split.startswith("test"):
            raise LitHFError(f"The {split} split has no label column {label!r}; set --data.label_column.")
        if labelled:
            self._check_labels(raw, label, split)
            raw = raw.map(
                partial(encode_labels, label_column=label, label_to_id=self._label_to_id()),
                batched=True,
                num_proc=workers,
                load_from_cache_file=fresh,
                desc=f"Labels of {split}",
            )
        examples = raw.map(
            partial(
                tokenize_pairs,
                tokenizer=tokenizer,
                text_column=text,
                text_pair_column=pair,
                max_length=self._max_length(tokenizer),
                truncation=self.hparams.truncation,
                padding=self.hparams.pad_to_max_length,
            ),
            batched=True,
            num_proc=workers,
            load_from_cache_file=fresh,
            desc=f"Tokenizing {split}",
        )
        keep = [c for c in MODEL_INPUTS if c in examples.column_names]
        examples = examples.select_columns(keep)
        return examples.add_column("idx", list(range(len(examples))))  # input order, for prediction files

    def _check_labels(self, raw: Dataset, column: str, split: str) -> None:
        table = self._label_to_id()
        if table is None:
            return
        unknown = sorted({str(v) for v in raw.unique(column)} - set(table))
        if unknown:
            names = ", ".join(self.label_names or [])
            raise LitHFError(f"The {split} split has labels {unknown[:5]} that are not among the labels ({names}).")

    def _label_to_id(self) -> dict[str, int] | None:
        names = self.label_names
        return None if names is None else label_table(names, numbered=self.task is not None)

    @functools.cache  # noqa: B019 (one data module per run; the label column is read once)
    def _file_labels(self) -> tuple[list[str] | None, bool]:
        """Sorted label values of the first given file with labels (train, validation, test); floats: regression.

        A test file alone without labels (prediction with a fine-tuned model) gives None: the model's own labels.
        """
        column = self.hparams.label_column
        for split, path in self._files().items():
            data = load_files({split: path}, self.hparams.data_cache_dir)[split]
            if column in data.column_names:
                if data.features[column].dtype in ("float32", "float64"):
                    return None, True
                return [str(v) for v in sorted(data.unique(column))], False
            if split != "test":
                raise LitHFError(
                    f"{split}_file has no label column {column!r} (columns: {', '.join(data.column_names)}); "
                    "set --data.label_column."
                )
        return None, False

    def _max_length(self, tokenizer: PreTrainedTokenizerBase) -> int:
        hp = self.hparams
        limit = min(hp.max_seq_length, tokenizer.model_max_length)
        model = position_limit(hp.config_name_or_path, revision=hp.revision, trust_remote_code=hp.trust_remote_code)
        return min(limit, model or limit)

    def _source_identity(self, split: str) -> Any:
        hp = self.hparams
        files = self._files()
        if files:
            return ["files", file_identity(files[split]) if split in files else None]
        if hp.data_dir:
            path = glue_file(hp.data_dir, self.task, split)
            return ["glue_dir", hp.task_name, file_identity(str(path)) if path.is_file() else None]
        return ["hub", "nyu-mll/glue", hp.task_name]

    def _cache_key(self, split: str, tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
        hp = self.hparams
        return {
            "format": 1,
            "split": split,
            "source": self._source_identity(split),
            "tokenizer": tokenizer_identity(tokenizer),
            "columns": self._columns(),
            "labels": self._label_to_id(),
            "max_length": self._max_length(tokenizer),
            "truncation": hp.truncation,
            "pad_to_max_length": hp.pad_to_max_length,
            "limit": self._limit(split),
        }

    def _cache(self, split: str, tokenizer: PreTrainedTokenizerBase) -> tuple[Path, dict[str, Any]]:
        """The split's cache directory and its key (computed once: hashing the tokenizer is not free)."""
        key = self._cache_key(split, tokenizer)
        return cache_path(self.hparams.data_cache_dir, "cls", key), key

    def _load_tokenizer(self) -> PreTrainedTokenizerBase:
        hp = self.hparams
        tokenizer = from_hub(
            AutoTokenizer.from_pretrained,
            hp.tokenizer_name_or_path,
            "tokenizer",
            revision=hp.revision,
            trust_remote_code=hp.trust_remote_code,
        )
        if tokenizer.pad_token is None:  # decoder-only models (GPT-2, ...) pad with EOS; the task does the same
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer


GlueDataModule = TextClassificationDataModule  # the same class, under the name GLUE configs read best with
