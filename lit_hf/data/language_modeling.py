"""Language-modeling data: text from the hub, files or a saved dataset, tokenized and cut into fixed blocks."""

from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from datasets import Dataset, DatasetDict, load_from_disk
from torch import Tensor
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from lit_hf.data.cache import cache_path, file_identity, is_cached, save_atomically, tokenizer_identity, tree_identity
from lit_hf.data.sampling import eval_dataloader
from lit_hf.data.sources import carve_validation, check_files, load_files, load_hub, load_saved
from lit_hf.errors import ConfigError, LitHFError
from lit_hf.hub import from_hub
from lit_hf.models import position_limit

# Which splits each trainer entry point reads.
STAGE_SPLITS = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",)}


def tokenize_text(batch: dict[str, list], *, tokenizer: PreTrainedTokenizerBase, text_column: str) -> dict[str, list]:
    """Token ids of each row as it is, special tokens included where the tokenizer adds them (as run_clm.py)."""
    return {"input_ids": tokenizer(batch[text_column], verbose=False)["input_ids"]}


def group_blocks(token_lists: pa.ChunkedArray, block_size: int) -> Dataset:
    """Concatenate all rows into one stream and cut it into `block_size` blocks, dropping only the remainder."""
    stream = np.concatenate([pc.list_flatten(chunk).to_numpy() for chunk in token_lists.chunks] or [np.zeros(0)])
    usable = len(stream) // block_size * block_size
    blocks = pa.FixedSizeListArray.from_arrays(pa.array(stream[:usable].astype(np.int32)), block_size)
    return Dataset(pa.table({"input_ids": blocks}))


def collate_blocks(examples: list[dict[str, np.ndarray]]) -> dict[str, Tensor]:
    """Blocks share one length, so no padding; labels are the inputs (the model shifts them)."""
    input_ids = torch.from_numpy(np.stack([ex["input_ids"] for ex in examples])).long()  # (batch, block_size)
    return {"input_ids": input_ids, "labels": input_ids}


class LanguageModelingDataModule(L.LightningDataModule):
    """Batches of `input_ids` and `labels`, each (batch_size, block_size), from a stream of all rows of a split.

    Tokenizing and grouping run in `prepare_data` (once per node) into a cache keyed by the tokenizer, the data
    source and the options; `setup` loads it on every process. Evaluation shards the blocks across processes
    without padding or duplicates.

    Args:
        tokenizer_name_or_path: Tokenizer to load; the CLI links it to the model's (or `--model.tokenizer_name`).
        config_name_or_path: Model config whose position limit caps the default block size; linked by the CLI.
        revision: Hub revision of the tokenizer and config; linked to the model's.
        trust_remote_code: Allow tokenizer code from the hub; linked to the model's.
        dataset_name: Hub dataset id, e.g. `Salesforce/wikitext`. Local files win when both are given.
        dataset_config_name: Hub dataset configuration, e.g. `wikitext-2-raw-v1`.
        train_file: Local training data: .csv, .tsv, .json, .jsonl, .parquet, or plain text (any other ending).
        validation_file: Local validation file, same types.
        test_file: Local test file, same types.
        dataset_path: A DatasetDict written by `save_to_disk`.
        text_column: Column holding the text in csv/json/parquet/hub data (.txt files always give `text`).
        validation_split_percentage: Percent of train used for validation when there is no validation split.
        keep_linebreaks: Keep the line breaks of .txt files.
        block_size: Tokens per training block. Default: min(1024, the tokenizer's and the model's maximum length).
        max_train_samples: Keep only the first N training blocks (debugging, quick runs).
        max_eval_samples: Keep only the first N validation/test blocks.
        preprocessing_num_workers: Processes for tokenization.
        overwrite_cache: Tokenize again even when a cached result exists.
        data_cache_dir: Where datasets and the tokenized cache go (default: the `datasets` cache).
        batch_size: Training blocks per batch per process.
        eval_batch_size: Evaluation blocks per batch per process (default: batch_size).
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        tokenizer_name_or_path: str,
        config_name_or_path: str | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
        dataset_name: str | None = None,
        dataset_config_name: str | None = None,
        train_file: str | None = None,
        validation_file: str | None = None,
        test_file: str | None = None,
        dataset_path: str | None = None,
        text_column: str = "text",
        validation_split_percentage: int = 5,
        keep_linebreaks: bool = True,
        block_size: int | None = None,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        preprocessing_num_workers: int | None = None,
        overwrite_cache: bool = False,
        data_cache_dir: str | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if not (dataset_name or train_file or validation_file or test_file or dataset_path):
            raise ConfigError("Give a data source: dataset_name, train_file/validation_file/test_file or dataset_path.")
        if dataset_path and (train_file or validation_file or test_file):
            raise ConfigError("Give either dataset_path or train_file/validation_file/test_file, not both.")
        if not 0 <= validation_split_percentage < 100:
            raise ConfigError(f"validation_split_percentage must be in [0, 100), got {validation_split_percentage}.")
        if block_size is not None and block_size < 1:
            raise ConfigError(f"block_size must be positive, got {block_size}.")
        self.datasets: dict[str, Dataset] = {}

    def prepare_data(self) -> None:
        tokenizer = self._load_tokenizer()
        block_size = self._block_size(tokenizer)
        raw: DatasetDict | None = None
        for split in self._splits():
            path, key = self._cache(split, tokenizer, block_size)
            if is_cached(path) and not self.hparams.overwrite_cache:
                continue
            raw = raw if raw is not None else self._load_raw()
            if split not in raw:
                if split == self._splits()[0] and self.trainer is not None:  # optional: validation during fit
                    raise LitHFError(f"The data has no {split} split (it has: {', '.join(raw) or 'none'}).")
                continue
            blocks = self._tokenize_and_group(raw[split], split, tokenizer, block_size)
            save_atomically(DatasetDict({split: blocks}), path, key)

    def setup(self, stage: str) -> None:
        self.tokenizer = self._load_tokenizer()
        block_size = self._block_size(self.tokenizer)
        for split in STAGE_SPLITS.get(stage, ()):
            path, _ = self._cache(split, self.tokenizer, block_size)
            if not is_cached(path):  # a split the data does not have (prepare_data said so if it was needed)
                continue
            blocks = load_from_disk(str(path))[split]
            limit = self.hparams.max_train_samples if split == "train" else self.hparams.max_eval_samples
            if limit is not None:
                blocks = blocks.select(range(min(limit, len(blocks))))
            self.datasets[split] = blocks.with_format("numpy")

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.datasets["train"],
            batch_size=self.hparams.batch_size,
            shuffle=True,
            collate_fn=collate_blocks,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loader("validation") if "validation" in self.datasets else []  # [] skips validation

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def _eval_loader(self, split: str) -> DataLoader:
        return eval_dataloader(
            self.datasets[split],
            batch_size=self.hparams.eval_batch_size or self.hparams.batch_size,
            collate_fn=collate_blocks,
            num_workers=self.hparams.num_workers,
        )

    def _splits(self) -> tuple[str, ...]:
        """The splits the running trainer entry point needs; all of them when used outside a trainer."""
        fn = self.trainer.state.fn if self.trainer is not None else None
        return STAGE_SPLITS.get(getattr(fn, "value", fn), ("train", "validation", "test"))

    def _files(self) -> dict[str, str]:
        hp = self.hparams
        files = {"train": hp.train_file, "validation": hp.validation_file, "test": hp.test_file}
        return check_files(files, default="text")

    def _load_raw(self) -> DatasetDict:
        hp = self.hparams
        if hp.dataset_path:
            raw = load_saved(hp.dataset_path)
        elif self._files():
            raw = load_files(self._files(), hp.data_cache_dir, default="text", keep_linebreaks=hp.keep_linebreaks)
        else:
            raw = load_hub(hp.dataset_name, hp.dataset_config_name, None, hp.data_cache_dir)
        return carve_validation(raw, hp.validation_split_percentage)

    def _tokenize_and_group(self, raw: Dataset, split: str, tokenizer: PreTrainedTokenizerBase, size: int) -> Dataset:
        column = self.hparams.text_column
        if column not in raw.column_names:
            raise LitHFError(
                f"The {split} split has no column {column!r} (columns: {', '.join(raw.column_names)}); "
                "set --data.text_column."
            )
        if len(raw) == 0:
            raise LitHFError(f"The {split} split is empty.")
        tokens = raw.map(
            partial(tokenize_text, tokenizer=tokenizer, text_column=column),
            batched=True,
            num_proc=self.hparams.preprocessing_num_workers,
            remove_columns=raw.column_names,
            load_from_cache_file=not self.hparams.overwrite_cache,
            desc=f"Tokenizing {split}",
        )
        blocks = group_blocks(tokens.data.column("input_ids"), size)
        if len(blocks) == 0:
            n = int(pc.sum(pc.list_value_length(tokens.data.column("input_ids"))).as_py() or 0)
            raise LitHFError(
                f"The {split} split has {n} tokens, fewer than one block of {size}; "
                "lower --data.block_size or add text."
            )
        return blocks

    def _source_identity(self, split: str) -> Any:
        hp = self.hparams
        if hp.dataset_path:
            return ["saved", tree_identity(hp.dataset_path)]
        files = self._files()
        if files:
            source_split = split if split in files or split != "validation" else "train"
            return ["files", {s: file_identity(p) for s, p in files.items() if s in (split, source_split)}]
        return ["hub", hp.dataset_name, hp.dataset_config_name]

    def _cache_key(self, split: str, tokenizer: PreTrainedTokenizerBase, block_size: int) -> dict[str, Any]:
        hp = self.hparams
        carved = split in ("train", "validation") and not hp.validation_file
        return {
            "format": 1,
            "split": split,
            "source": self._source_identity(split),
            "tokenizer": tokenizer_identity(tokenizer),
            "text_column": hp.text_column,
            "keep_linebreaks": hp.keep_linebreaks,
            "block_size": block_size,
            "validation_split_percentage": hp.validation_split_percentage if carved else None,
        }

    def _cache(self, split: str, tokenizer: PreTrainedTokenizerBase, block_size: int) -> tuple[Path, dict[str, Any]]:
        """The split's cache directory and its key (computed once: hashing the tokenizer is not free)."""
        key = self._cache_key(split, tokenizer, block_size)
        return cache_path(self.hparams.data_cache_dir, "clm", key), key

    def _load_tokenizer(self) -> PreTrainedTokenizerBase:
        hp = self.hparams
        return from_hub(
            AutoTokenizer.from_pretrained,
            hp.tokenizer_name_or_path,
            "tokenizer",
            revision=hp.revision,
            trust_remote_code=hp.trust_remote_code,
        )

    def _block_size(self, tokenizer: PreTrainedTokenizerBase) -> int:
        hp = self.hparams
        limit = position_limit(hp.config_name_or_path, revision=hp.revision, trust_remote_code=hp.trust_remote_code)
        if hp.block_size is None:
            return min(1024, tokenizer.model_max_length, limit or 1024)
        if limit is not None and hp.block_size > limit:
            raise LitHFError(
                f"block_size {hp.block_size} exceeds the model's {limit} positions; lower --data.block_size."
            )
        return hp.block_size
