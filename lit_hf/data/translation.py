"""Translation data: sentence pairs from the hub, files or a saved dataset, tokenized once per node."""

from functools import partial
from typing import Any

import lightning as L
from datasets import Dataset
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from lit_hf.data.given import build_given, given_limit, given_origin, given_source, load_given
from lit_hf.data.prepared import (
    STAGE_SPLITS,
    Caches,
    caches,
    capped_length,
    check_sizes,
    linked_config,
    linked_tokenizer,
    load_splits,
    map_batched,
    prepare_splits,
    running_stage,
)
from lit_hf.data.seq2seq import seq2seq_eval_loader, seq2seq_train_loader
from lit_hf.data.sources import check_sources
from lit_hf.data.translation_inputs import PAIR_COLUMN, pair_columns, set_language_codes, t5_prefix, tokenize_pairs
from lit_hf.data.values import check_texts
from lit_hf.errors import ConfigError, check_positive
from lit_hf.models import T5_FAMILY, max_positions
from lit_hf.options import HubOptions, plain_hparams
from lit_hf.paths import LocalPath, ModelPath


class TranslationDataModule(L.LightningDataModule):
    """Batches of `input_ids`, `attention_mask`, `labels` (padding -100), `index` and, for evaluation, `references`.

    Sources: local json/jsonl with `{"translation": {source_lang: ..., target_lang: ...}}` rows, csv/tsv/json with a
    source and a target column, a saved dataset, or the hub (e.g. `wmt/wmt16`, `ro-en`). Tokenizing runs in
    `prepare_data` (once per node) into a cache keyed by everything that shapes it; `setup` loads it on every
    process. Evaluation batches are cut from examples sorted by source length (longest first) and sharded across
    processes without padding or duplicates; `index` lets the task restore dataset order.

    Args:
        model_name_or_path: The model the data is prepared for: its tokenizer, and its config (its position limit
            caps the source length; T5 models get a prefix); `hub` may name others. Linked from
            `--model.model_name_or_path`.
        hub: Where the model's files come from; linked from `--model.hub`.
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
        source_lang: str,
        target_lang: str,
        model_name_or_path: ModelPath | None = None,
        hub: HubOptions = HubOptions(),
        dataset_name: str | None = None,
        dataset_config_name: str | None = None,
        train_file: LocalPath | None = None,
        validation_file: LocalPath | None = None,
        test_file: LocalPath | None = None,
        predict_file: LocalPath | None = None,
        dataset_path: LocalPath | None = None,
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
        data_cache_dir: LocalPath | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_sizes(self.hparams)
        plain_hparams(self)
        self.model_name_or_path, self.hub = model_name_or_path, hub
        check_sources(dataset_name or predict_file, dataset_path, [train_file, validation_file, test_file])
        if source_lang == target_lang:
            raise ConfigError(f"source_lang and target_lang are both {source_lang!r}.")
        lengths = {"max_target_length": max_target_length, "val_max_target_length": val_max_target_length}
        check_positive(max_source_length=max_source_length, **lengths)
        self.datasets: dict[str, Dataset] = {}

    def prepare_data(self) -> None:
        tokenizer, prefix, max_source = self._settings(notify=True)
        build = build_given(
            self.trainer, lambda raw, split, tag: self._tokenize(raw, split, tokenizer, prefix, max_source, tag)
        )
        caches = self._caches(tokenizer, prefix, max_source)
        prepare_splits(caches, lambda: load_given(self.hparams), build, self.hparams.overwrite_cache)

    def setup(self, stage: str) -> None:
        self.tokenizer, prefix, max_source = self._settings(notify=False)
        caches = self._caches(self.tokenizer, prefix, max_source, stage)
        self.datasets.update(load_splits(caches, given_limit(self.hparams)))

    def train_dataloader(self) -> DataLoader:
        return seq2seq_train_loader(self.datasets["train"], self.hparams, self.tokenizer, self.trainer)

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loader("validation") if "validation" in self.datasets else []  # [] skips validation

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("predict")

    def task_arguments(self) -> dict[str, Any]:
        """Generation stops at the evaluation target length unless the task sets its own."""
        return {"generation.max_new_tokens": self.hparams.val_max_target_length or self.hparams.max_target_length}

    def export_params(self) -> dict[str, dict[str, str]]:
        """What an export writes into the model config's `task_specific_params`: the source prefix this data puts
        before every source, under the key T5's configs use (`translation_en_to_ro`)."""
        key = f"translation_{self.hparams.source_lang}_to_{self.hparams.target_lang}"
        return {key: {"prefix": self._settings(notify=False)[1]}}

    def _eval_loader(self, split: str) -> DataLoader:
        return seq2seq_eval_loader(self.datasets[split], self.hparams, self.tokenizer, self.trainer)

    def _tokenize(
        self, raw: Dataset, split: str, tokenizer: PreTrainedTokenizerBase, prefix: str, max_source: int, tag: str
    ) -> Dataset:
        hp = self.hparams
        source, target = pair_columns(raw, split, hp.source_lang, hp.target_lang, hp.source_column, hp.target_column)
        sides = [(column, lang if column == PAIR_COLUMN else None) for column, lang in filter(None, (source, target))]
        check_texts(raw, given_origin(hp, split), sides)
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
        pairs = map_batched(raw, fn, tag, "tokenize", hp, drop=True)
        return pairs.add_column("index", list(range(len(pairs))))

    def _caches(
        self, tokenizer: PreTrainedTokenizerBase, prefix: str, max_source: int, stage: str | None = None
    ) -> Caches:
        """The cache of each split the stage reads (the running trainer's, else all)."""
        hp = self.hparams
        splits = STAGE_SPLITS.get(stage or running_stage(self.trainer) or "", ("train", "validation", "test"))

        def key(split: str) -> dict[str, Any]:
            return {
                "source": given_source(hp, split),
                "columns": [hp.source_lang, hp.target_lang, hp.source_column, hp.target_column],
                "prefix": prefix,
                "lang_codes": [hp.src_lang, hp.tgt_lang],
                "lengths": [max_source, hp.max_target_length, hp.val_max_target_length if split != "train" else None],
                "padding": [hp.pad_to_max_length, hp.ignore_pad_token_for_loss],
            }

        return caches(splits, "translation", hp.data_cache_dir, tokenizer, key)

    def _settings(self, notify: bool) -> tuple[PreTrainedTokenizerBase, str, int]:
        """The tokenizer (language codes set), the source prefix and the source length limit."""
        hp = self.hparams
        tokenizer = set_language_codes(linked_tokenizer(self.model_name_or_path, self.hub), hp.src_lang, hp.tgt_lang)
        config = linked_config(self.model_name_or_path, self.hub)
        prefix = hp.source_prefix
        if prefix is None:
            is_t5 = getattr(config, "model_type", None) in T5_FAMILY
            prefix = t5_prefix(hp.source_lang, hp.target_lang) if is_t5 else ""
            if is_t5 and notify:
                rank_zero_info(f"T5 model: source prefix {prefix!r} (set --data.source_prefix to change it).")
        limit = max_positions(config)
        return tokenizer, prefix, capped_length(hp.max_source_length, tokenizer, limit, "max_source_length")
