"""Translation data: sentence pairs from the hub, files or a saved dataset, tokenized once per node."""

from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, load_from_disk
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase

from lit_hf.data.cache import cache_path, file_identity, is_cached, save_atomically, tokenizer_identity, tree_identity
from lit_hf.data.sampling import eval_dataloader
from lit_hf.data.sources import check_files, load_files, load_hub, load_saved
from lit_hf.data.translation_inputs import PAIR_COLUMN, collate_pairs, t5_prefix, tokenize_pairs
from lit_hf.errors import ConfigError, LitHFError
from lit_hf.hub import from_hub
from lit_hf.models import max_positions

# Which splits each trainer entry point reads; `predict` comes from predict_file, else the data's test split.
STAGE_SPLITS = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",), "predict": ("predict",)}

# Tokenizers that need `src_lang`/`tgt_lang` to add the right language codes (as run_translation.py lists them).
MULTILINGUAL_TOKENIZERS = ("MBartTokenizer", "MBart50Tokenizer", "M2M100Tokenizer", "NllbTokenizer")


def source_split(raw: DatasetDict, split: str) -> str:
    """The raw split that feeds `split`: `predict` reads the test split unless a predict_file was given."""
    return "test" if split == "predict" and "predict" not in raw else split


class TranslationDataModule(L.LightningDataModule):
    """Batches of `input_ids`, `attention_mask`, `labels` (padding -100), `index` and, for evaluation, `references`.

    Sources: local json/jsonl with `{"translation": {source_lang: ..., target_lang: ...}}` rows, csv/tsv/json with a
    source and a target column, a saved dataset, or the hub (e.g. `wmt/wmt16`, `ro-en`). Tokenizing runs in
    `prepare_data` (once per node) into a cache keyed by everything that shapes it; `setup` loads it on every
    process. Evaluation batches are cut from examples sorted by source length (longest first) and sharded across
    processes without padding or duplicates; `index` lets the task restore dataset order.

    Args:
        tokenizer_name_or_path: Tokenizer to load; the CLI links it to the model's (or `--model.tokenizer_name`).
        config_name_or_path: Model config: its position limit caps the source length; T5 models get a prefix.
        revision: Hub revision of the tokenizer and config; linked to the model's.
        trust_remote_code: Allow tokenizer code from the hub; linked to the model's.
        source_lang: Language code of the source side, e.g. `en` (a key of `translation` or a column name).
        target_lang: Language code of the target side, e.g. `ro`.
        dataset_name: Hub dataset id, e.g. `wmt/wmt16`. Local files win when both are given.
        dataset_config_name: Hub dataset configuration, e.g. `ro-en`.
        train_file: Local training pairs (.json, .jsonl, .csv, .tsv or .parquet).
        validation_file: Local validation pairs, same types.
        test_file: Local test pairs, same types.
        predict_file: Sources to translate with `predict` (.txt: one per line). Default: the test split.
        dataset_path: A DatasetDict written by `save_to_disk`.
        source_column: Column of source texts when rows have no `translation` field (default: source_lang).
        target_column: Column of target texts when rows have no `translation` field (default: target_lang).
        source_prefix: Text put before every source. Default: "translate English to Romanian: " for T5 models
            (from the language codes), nothing otherwise; an explicit value, also "", wins.
        src_lang: Source language code of multilingual tokenizers (mBART `en_XX`, M2M100 `en`).
        tgt_lang: Target language code of multilingual tokenizers (mBART `ro_RO`).
        max_source_length: Longest source in tokens, longer ones truncated. Default: min(1024, the tokenizer's
            and the model's limit); above the model's positions is an error.
        max_target_length: Longest training target in tokens, longer ones truncated.
        val_max_target_length: Longest validation/test target for the loss (default: max_target_length); the CLI
            also makes it the task's default `max_new_tokens`. BLEU is scored against the untruncated text.
        pad_to_max_length: Pad every example to the maximum lengths instead of to the longest in the batch.
        ignore_pad_token_for_loss: Label padding becomes -100, so the loss ignores it.
        sort_by_length: Build evaluation batches from examples sorted by source length (less padding).
        max_train_samples: Keep only the first N training pairs (debugging, quick runs).
        max_eval_samples: Keep only the first N validation/test pairs.
        max_predict_samples: Keep only the first N sources to translate.
        preprocessing_num_workers: Processes for tokenization.
        overwrite_cache: Tokenize again even when a cached result exists.
        data_cache_dir: Where datasets and the tokenized cache go (default: the `datasets` cache).
        batch_size: Training pairs per batch per process.
        eval_batch_size: Evaluation pairs per batch per process (default: batch_size).
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        tokenizer_name_or_path: str,
        source_lang: str,
        target_lang: str,
        config_name_or_path: str | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
        dataset_name: str | None = None,
        dataset_config_name: str | None = None,
        train_file: str | None = None,
        validation_file: str | None = None,
        test_file: str | None = None,
        predict_file: str | None = None,
        dataset_path: str | None = None,
        source_column: str | None = None,
        target_column: str | None = None,
        source_prefix: str | None = None,
        src_lang: str | None = None,
        tgt_lang: str | None = None,
        max_source_length: int | None = None,
        max_target_length: int = 128,
        val_max_target_length: int | None = None,
        pad_to_max_length: bool = False,
        ignore_pad_token_for_loss: bool = True,
        sort_by_length: bool = True,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        max_predict_samples: int | None = None,
        preprocessing_num_workers: int | None = None,
        overwrite_cache: bool = False,
        data_cache_dir: str | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if not (dataset_name or train_file or validation_file or test_file or predict_file or dataset_path):
            raise ConfigError("Give a data source: dataset_name, train_file/validation_file/test_file or dataset_path.")
        if dataset_path and (train_file or validation_file or test_file):
            raise ConfigError("Give either dataset_path or train_file/validation_file/test_file, not both.")
        if source_lang == target_lang:
            raise ConfigError(f"source_lang and target_lang are both {source_lang!r}.")
        for name in ("max_source_length", "max_target_length", "val_max_target_length"):
            if (value := getattr(self.hparams, name)) is not None and value < 1:
                raise ConfigError(f"{name} must be positive, got {value}.")
        self.datasets: dict[str, Dataset] = {}

    def prepare_data(self) -> None:
        tokenizer, prefix, max_source = self._settings(notify=True)
        raw: DatasetDict | None = None
        for split in self._splits():
            path, key = self._cache(split, tokenizer, prefix, max_source)
            if is_cached(path) and not self.hparams.overwrite_cache:
                continue
            raw = raw if raw is not None else self._load_raw()
            optional = self.trainer is None or (split == "validation" and self._splits()[0] == "train")
            if optional and source_split(raw, split) not in raw:
                continue  # fit without validation data, or a split this data lacks when used outside a trainer
            pairs = self._tokenize(self._raw_split(raw, split), split, tokenizer, prefix, max_source)
            save_atomically(DatasetDict({split: pairs}), path, key)

    def setup(self, stage: str) -> None:
        self.tokenizer, prefix, max_source = self._settings(notify=False)
        for split in STAGE_SPLITS.get(stage, ()):
            path, _ = self._cache(split, self.tokenizer, prefix, max_source)
            if not is_cached(path):
                continue  # a split the data lacks; prepare_data raised if this stage needs it
            pairs = load_from_disk(str(path))[split]
            hp = self.hparams
            limit = {"train": hp.max_train_samples, "predict": hp.max_predict_samples}.get(split, hp.max_eval_samples)
            if limit is not None:
                pairs = pairs.select(range(min(limit, len(pairs))))
            self.datasets[split] = pairs

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.datasets["train"].remove_columns("target_text"),
            batch_size=self.hparams.batch_size,
            shuffle=True,
            collate_fn=self._collate(),
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loader("validation") if "validation" in self.datasets else []  # [] skips validation

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("predict")

    def _eval_loader(self, split: str) -> DataLoader:
        pairs = self.datasets[split]
        order = None
        if self.hparams.sort_by_length:  # longest first: a batch that does not fit shows at once
            lengths = np.asarray(pc.list_value_length(pairs.with_format("arrow")["input_ids"]))
            order = np.argsort(-lengths, kind="stable").tolist()
        return eval_dataloader(
            pairs,
            batch_size=self.hparams.eval_batch_size or self.hparams.batch_size,
            collate_fn=self._collate(),
            num_workers=self.hparams.num_workers,
            order=order,
        )

    def _collate(self) -> partial:
        label_pad = -100 if self.hparams.ignore_pad_token_for_loss else self.tokenizer.pad_token_id
        return partial(collate_pairs, pad_token_id=self.tokenizer.pad_token_id, label_pad_token_id=label_pad)

    def _splits(self) -> tuple[str, ...]:
        """The splits the running trainer entry point needs; all of them when used outside a trainer."""
        fn = self.trainer.state.fn if self.trainer is not None else None
        return STAGE_SPLITS.get(getattr(fn, "value", fn), ("train", "validation", "test"))

    def _files(self) -> dict[str, str]:
        hp = self.hparams
        files = {"train": hp.train_file, "validation": hp.validation_file, "test": hp.test_file}
        return check_files({**files, "predict": hp.predict_file})

    def _load_raw(self) -> DatasetDict:
        hp = self.hparams
        files = self._files()
        if hp.dataset_path:
            raw = load_saved(hp.dataset_path)
            return DatasetDict({**raw, **load_files(files, hp.data_cache_dir)}) if files else raw
        if files:
            return load_files(files, hp.data_cache_dir)
        if hp.dataset_name:
            return load_hub(hp.dataset_name, hp.dataset_config_name, None, hp.data_cache_dir)
        raise LitHFError("No data source gives the splits this run needs; set train_file/validation_file/test_file.")

    def _raw_split(self, raw: DatasetDict, split: str) -> Dataset:
        name = source_split(raw, split)
        if name not in raw:
            option = "predict_file" if split == "predict" else f"{split}_file"
            raise LitHFError(f"The data has no {name} split (it has: {', '.join(raw) or 'none'}); set --data.{option}.")
        if len(raw[name]) == 0:
            raise LitHFError(f"The {name} split is empty.")
        return raw[name]

    def _columns(self, raw: Dataset, split: str) -> tuple[tuple[str, str], tuple[str, str] | None]:
        """(column, language) of the source and of the target (None: a predict split without targets)."""
        hp = self.hparams
        if PAIR_COLUMN in raw.column_names and not (hp.source_column or hp.target_column):
            keys = set(raw[0][PAIR_COLUMN] or {})
            for lang, option in ((hp.source_lang, "source_lang"), (hp.target_lang, "target_lang")):
                if lang not in keys and not (split == "predict" and option == "target_lang"):
                    raise LitHFError(
                        f"The {split} split's translation pairs have no {lang!r} (they have: "
                        f"{', '.join(sorted(keys))}); set --data.{option}."
                    )
            target = (PAIR_COLUMN, hp.target_lang) if hp.target_lang in keys else None
            return (PAIR_COLUMN, hp.source_lang), target
        source = hp.source_column or ("text" if "text" in raw.column_names and split == "predict" else hp.source_lang)
        target = hp.target_column or hp.target_lang
        if source not in raw.column_names:
            raise LitHFError(
                f"The {split} split has no {PAIR_COLUMN!r} pairs and no source column {source!r} "
                f"(columns: {', '.join(raw.column_names)}); set --data.source_column."
            )
        if target not in raw.column_names:
            if split == "predict":
                return (source, hp.source_lang), None
            raise LitHFError(
                f"The {split} split has no target column {target!r} (columns: {', '.join(raw.column_names)}); "
                "set --data.target_column."
            )
        return (source, hp.source_lang), (target, hp.target_lang)

    def _tokenize(
        self, raw: Dataset, split: str, tokenizer: PreTrainedTokenizerBase, prefix: str, max_source: int
    ) -> Dataset:
        hp = self.hparams
        source, target = self._columns(raw, split)
        max_target = hp.max_target_length if split == "train" else hp.val_max_target_length or hp.max_target_length
        fn = partial(
            tokenize_pairs,
            tokenizer=tokenizer,
            source=source,
            target=target,
            prefix=prefix,
            max_source_length=max_source,
            max_target_length=max_target,
            pad_to_max_length=hp.pad_to_max_length,
            ignore_pad_token_for_loss=hp.ignore_pad_token_for_loss,
        )
        pairs = raw.map(
            fn,
            batched=True,
            num_proc=hp.preprocessing_num_workers,
            remove_columns=raw.column_names,
            load_from_cache_file=not hp.overwrite_cache,
            desc=f"Tokenizing {split}",
        )
        return pairs.add_column("index", list(range(len(pairs))))

    def _cache_key(
        self, split: str, tokenizer: PreTrainedTokenizerBase, prefix: str, max_source: int
    ) -> dict[str, Any]:
        hp = self.hparams
        if hp.dataset_path and not (split == "predict" and hp.predict_file):
            source: Any = ["saved", tree_identity(hp.dataset_path)]
        elif files := self._files():
            name = "test" if split == "predict" and split not in files else split
            source = ["file", file_identity(files[name]) if name in files else None]
        else:
            source = ["hub", hp.dataset_name, hp.dataset_config_name]
        return {
            "format": 1,
            "split": split,
            "source": source,
            "tokenizer": tokenizer_identity(tokenizer),
            "columns": [hp.source_lang, hp.target_lang, hp.source_column, hp.target_column],
            "prefix": prefix,
            "lang_codes": [hp.src_lang, hp.tgt_lang],
            "lengths": [max_source, hp.max_target_length, hp.val_max_target_length if split != "train" else None],
            "padding": [hp.pad_to_max_length, hp.ignore_pad_token_for_loss],
        }

    def _cache(
        self, split: str, tokenizer: PreTrainedTokenizerBase, prefix: str, max_source: int
    ) -> tuple[Path, dict[str, Any]]:
        """The split's cache directory and its key (computed once: hashing the tokenizer is not free)."""
        key = self._cache_key(split, tokenizer, prefix, max_source)
        return cache_path(self.hparams.data_cache_dir, "translation", key), key

    def _settings(self, notify: bool) -> tuple[PreTrainedTokenizerBase, str, int]:
        """The tokenizer (language codes set), the source prefix and the source length limit."""
        hp = self.hparams
        hub = {"revision": hp.revision, "trust_remote_code": hp.trust_remote_code}
        tokenizer = from_hub(AutoTokenizer.from_pretrained, hp.tokenizer_name_or_path, "tokenizer", **hub)
        if type(tokenizer).__name__.removesuffix("Fast") in MULTILINGUAL_TOKENIZERS:
            if not (hp.src_lang and hp.tgt_lang):
                raise LitHFError(
                    f"{type(tokenizer).__name__} needs the language codes: set --data.src_lang and --data.tgt_lang "
                    "(e.g. en_XX and ro_RO for mBART)."
                )
            tokenizer.src_lang, tokenizer.tgt_lang = hp.src_lang, hp.tgt_lang
        config = None
        if hp.config_name_or_path:
            config = from_hub(AutoConfig.from_pretrained, hp.config_name_or_path, "model config", **hub)
        prefix = hp.source_prefix
        if prefix is None:
            is_t5 = getattr(config, "model_type", None) in ("t5", "mt5", "umt5")
            prefix = t5_prefix(hp.source_lang, hp.target_lang) if is_t5 else ""
            if is_t5 and notify:
                rank_zero_info(f"T5 model: source prefix {prefix!r} (set --data.source_prefix to change it).")
        return tokenizer, prefix, self._max_source_length(tokenizer, config)

    def _max_source_length(self, tokenizer: PreTrainedTokenizerBase, config: Any) -> int:
        limit = max_positions(config) if config is not None else None
        requested = self.hparams.max_source_length
        if requested is None:
            return min(1024, tokenizer.model_max_length, limit or 1024)
        if limit is not None and requested > limit:
            raise LitHFError(
                f"max_source_length {requested} exceeds the model's {limit} positions; lower --data.max_source_length."
            )
        return requested
