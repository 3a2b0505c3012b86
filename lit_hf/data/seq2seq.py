"""Seq2seq data (translation and summarization): source and target texts from the hub, files or a saved dataset,
tokenized once per node; one lifecycle, two column and prefix rules."""

import functools
from functools import partial
from typing import Any

from datasets import Dataset, DatasetDict
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from lit_hf.data.base import CUT_TARGET, DataModule, capped_length, linked_config, report_cut
from lit_hf.data.sampling import longest_first
from lit_hf.data.seq2seq_inputs import (
    Side,
    collate_pairs,
    pair_columns,
    t5_prefix,
    tokenize_pairs,
    with_language_codes,
)
from lit_hf.data.sources import check_sources, require_columns
from lit_hf.data.values import check_texts
from lit_hf.errors import ConfigError, check_positive
from lit_hf.models import T5_FAMILY, max_positions
from lit_hf.options import HubOptions
from lit_hf.paths import LocalPath, ModelPath

# (text, summary) columns of hub datasets, from run_summarization.py's summarization_name_mapping; keyed by the
# name after the organisation (`EdinburghNLP/xsum` -> `xsum`).
SUMMARIZATION_COLUMNS = {
    "amazon_reviews_multi": ("review_body", "review_title"),
    "big_patent": ("description", "abstract"),
    "cnn_dailymail": ("article", "highlights"),
    "orange_sum": ("text", "summary"),
    "pn_summary": ("article", "summary"),
    "psc": ("extract_text", "summary_text"),
    "samsum": ("dialogue", "summary"),
    "thaisum": ("body", "summary"),
    "xglue": ("news_body", "news_title"),
    "xsum": ("document", "summary"),
    "wiki_summary": ("article", "highlights"),
    "multi_news": ("document", "summary"),
}

SUMMARIZE = "summarize: "  # T5's summarization task prefix (T5 paper, CNN/DM and XSum tasks)


class Seq2SeqDataModule(DataModule):
    """The seq2seq lifecycle, once for both tasks: batches of `input_ids`, `attention_mask`, `labels` (padding
    -100), `index` and, for evaluation, `references` (the raw target texts).

    `TranslationDataModule` and `SummarizationDataModule` are thin subclasses (two classes, so that each one's
    constructor lists only its own options): they differ only in which columns hold the source and the target
    (`_sides`), in T5's default prefix (`_t5_prefix`), in what of that enters the cache key (`_columns_key`) and in
    the `task_specific_params` key of an export. Evaluation batches are cut from examples sorted by source length
    (longest first) and sharded across processes without padding or duplicates; `index` restores dataset order.
    """

    family = "seq2seq"

    def __init__(self, model_name_or_path: str | None, hub: HubOptions) -> None:
        super().__init__(model_name_or_path, hub)
        hp = self.hparams
        check_sources(
            hp.dataset_name or hp.predict_file, hp.dataset_path, [hp.train_file, hp.validation_file, hp.test_file]
        )
        lengths = {"max_target_length": hp.max_target_length, "val_max_target_length": hp.val_max_target_length}
        check_positive(max_source_length=hp.max_source_length, **lengths)

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self.datasets["train"].remove_columns("target_text"))

    def task_arguments(self) -> dict[str, Any]:
        """Generation stops at the evaluation target length unless the task sets its own."""
        return {"generation.max_new_tokens": self.hparams.val_max_target_length or self.hparams.max_target_length}

    def eval_loader(self, split: str, dataset: Dataset | None = None, order: Any = None) -> DataLoader:
        """Batches cut from the examples sorted by source length, longest first (`sort_by_length`), sharded."""
        examples = self.datasets[split] if dataset is None else dataset
        order = longest_first(examples) if self.hparams.sort_by_length and order is None else order
        return super().eval_loader(split, examples, order)

    def load_raw(self) -> DatasetDict:
        return self.load_files_or_hub()

    def build(self, raw: DatasetDict, split: str, tag: str) -> Dataset | None:
        rows = self.optional_split(raw, split)
        return None if rows is None else self._tokenize(rows, split, tag)

    def cache_key(self, split: str) -> dict[str, Any]:
        hp = self.hparams
        return {
            "source": self.source(split),
            **self._columns_key(),
            "prefix": self.prefix,
            "lengths": [self._max_source, hp.max_target_length, hp.val_max_target_length if split != "train" else None],
            "padding": [hp.pad_to_max_length, hp.ignore_pad_token_for_loss],
        }

    def collate(self, split: str) -> partial:
        """Pads to the batch's longest, to a multiple of 8 under mixed precision."""
        pad = self.tokenizer.pad_token_id
        label_pad = -100 if self.hparams.ignore_pad_token_for_loss else pad
        return partial(
            collate_pairs, pad_token_id=pad, label_pad_token_id=label_pad, pad_to_multiple_of=self.pad_multiple()
        )

    @functools.cached_property
    def prefix(self) -> str:
        """The text put before every source: `source_prefix`, else T5's task prefix for T5 models, else nothing."""
        if self.hparams.source_prefix is not None:
            return self.hparams.source_prefix
        if getattr(linked_config(self.model_name_or_path, self.hub), "model_type", None) not in T5_FAMILY:
            return ""
        prefix = self._t5_prefix()
        rank_zero_info(f"T5 model: source prefix {prefix!r} (set --data.source_prefix to change it).")
        return prefix

    @functools.cached_property
    def _max_source(self) -> int:
        """max_source_length, or its default from the tokenizer and the model: decided once per run."""
        limit = max_positions(linked_config(self.model_name_or_path, self.hub))
        return capped_length(self.hparams.max_source_length, self.tokenizer, limit, "max_source_length")

    def _tokenize(self, raw: Dataset, split: str, tag: str) -> Dataset:
        hp = self.hparams
        source, target = self._sides(raw, split)
        scored = [target] if target and split != "predict" else []  # predict writes no score
        check_texts(raw, self.origin(split), [source, *scored])
        max_target = hp.max_target_length if split == "train" else hp.val_max_target_length or hp.max_target_length
        fn = partial(
            tokenize_pairs,
            tokenizer=self._source_tokenizer(),
            source=source,
            target=target,
            prefix=self.prefix,
            max_source_length=self._max_source,
            max_target_length=max_target,
            pad_to_max_length=hp.pad_to_max_length,
            ignore_pad_token_for_loss=hp.ignore_pad_token_for_loss,
        )
        examples = report_cut(self.map_batched(raw, fn, tag, "tokenize", drop=True), split, self._max_source, "sources")
        examples = report_cut(examples, split, max_target, "targets", CUT_TARGET)
        return examples.add_column("index", list(range(len(examples))))

    def _source_tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer that tokenizes the sides (translation: with its language codes)."""
        return self.tokenizer

    def _sides(self, raw: Dataset, split: str) -> tuple[Side, Side | None]:
        """The source side and the target side (None: a predict split without targets), checked against `raw`."""
        raise NotImplementedError

    def _t5_prefix(self) -> str:
        raise NotImplementedError

    def _columns_key(self) -> dict[str, Any]:
        """The column (and language) options, for the cache key."""
        raise NotImplementedError


class TranslationDataModule(Seq2SeqDataModule):
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
        super().__init__(model_name_or_path, hub)
        if source_lang == target_lang:
            raise ConfigError(f"source_lang and target_lang are both {source_lang!r}.")

    def export_params(self) -> dict[str, dict[str, str]]:
        """What an export writes into the model config's `task_specific_params`: the source prefix this data puts
        before every source, under the key T5's configs use (`translation_en_to_ro`)."""
        return {f"translation_{self.hparams.source_lang}_to_{self.hparams.target_lang}": {"prefix": self.prefix}}

    def _sides(self, raw: Dataset, split: str) -> tuple[Side, Side | None]:
        hp = self.hparams
        return pair_columns(raw, split, hp.source_lang, hp.target_lang, hp.source_column, hp.target_column)

    def _t5_prefix(self) -> str:
        return t5_prefix(self.hparams.source_lang, self.hparams.target_lang)

    def _columns_key(self) -> dict[str, Any]:
        hp = self.hparams
        columns = [hp.source_lang, hp.target_lang, hp.source_column, hp.target_column]
        return {"task": "translation", "columns": columns, "lang_codes": [hp.src_lang, hp.tgt_lang]}

    def _source_tokenizer(self) -> PreTrainedTokenizerBase:
        return with_language_codes(self.tokenizer, self.hparams.src_lang, self.hparams.tgt_lang)


class SummarizationDataModule(Seq2SeqDataModule):
    """Batches of `input_ids`, `attention_mask`, `labels` (padding -100), `index` and, for evaluation, `references`.

    Sources: local json/jsonl/csv/parquet files with a text and a summary column, a saved dataset, or the hub (e.g.
    `EdinburghNLP/xsum`, or `abisee/cnn_dailymail` with `3.0.0`). Tokenizing runs in `prepare_data` (once per node)
    into a cache keyed by everything that shapes it; `setup` loads it on every process. Evaluation batches are cut
    from examples sorted by document length (longest first) and sharded across processes without padding or
    duplicates; `index` lets the task restore dataset order.

    Args:
        model_name_or_path: The model the data is prepared for: its tokenizer, and its config (its position limit
            caps the source length; T5 models get a prefix); `hub` may name others. Linked from
            `--model.model_name_or_path`.
        hub: Where the model's files come from; linked from `--model.hub`.
        dataset_name: Hub dataset id, e.g. `EdinburghNLP/xsum`. Local files win when both are given.
        dataset_config_name: Hub dataset configuration, e.g. `3.0.0` for `abisee/cnn_dailymail`.
        train_file: Local training documents with summaries (.json, .jsonl, .csv or .parquet).
        validation_file: Local validation documents, same types.
        test_file: Local test documents, same types.
        predict_file: Documents to summarize with `predict` (.txt: one per line; or a file with text_column).
            Default: the test split.
        dataset_path: A DatasetDict written by `save_to_disk`.
        text_column: Column of the documents. Default: the known hub dataset's (`document` for XSum, `article`
            for CNN/DailyMail), else the first column.
        summary_column: Column of the summaries. Default: the known hub dataset's, else the second column.
        source_prefix: Text put before every document. Default: "summarize: " for T5 models, nothing otherwise;
            an explicit value, also "", wins.
        max_source_length: Longest document in tokens, longer ones truncated. Default: min(1024, the tokenizer's
            and the model's limit); above the model's positions is an error.
        max_target_length: Longest training summary in tokens, longer ones truncated.
        val_max_target_length: Longest validation/test summary for the loss (default: max_target_length); the CLI
            also makes it the task's default `max_new_tokens`. ROUGE is scored against the untruncated text.
        pad_to_max_length: Pad every example to the maximum lengths instead of to the longest in the batch.
        ignore_pad_token_for_loss: Label padding becomes -100, so the loss ignores it.
        sort_by_length: Build evaluation batches from examples sorted by document length (less padding).
        max_train_samples: Keep only the first N training examples (debugging, quick runs).
        max_eval_samples: Keep only the first N validation/test examples.
        max_predict_samples: Keep only the first N documents to summarize.
        preprocessing_num_workers: Processes for tokenization.
        overwrite_cache: Tokenize again even when a cached result exists.
        data_cache_dir: Where datasets and the tokenized cache go (default: the `datasets` cache).
        batch_size: Training examples per batch per process.
        eval_batch_size: Evaluation examples per batch per process (default: batch_size).
        num_workers: DataLoader worker processes.
    """

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
        text_column: str | None = None,
        summary_column: str | None = None,
        source_prefix: str | None = None,
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
        super().__init__(model_name_or_path, hub)

    def export_params(self) -> dict[str, dict[str, str]]:
        """What an export writes into the model config's `task_specific_params`: the source prefix this data puts
        before every document, under the key T5's configs use (`summarization`)."""
        return {"summarization": {"prefix": self.prefix}}

    def _sides(self, raw: Dataset, split: str) -> tuple[Side, Side | None]:
        """(text column, summary column or None for a predict split without summaries), checked against the split."""
        hp = self.hparams
        known = SUMMARIZATION_COLUMNS.get((hp.dataset_name or "").rsplit("/", 1)[-1])
        names = raw.column_names
        text = hp.text_column or (known[0] if known else names[0])
        if split == "predict" and text not in names and "text" in names:
            text = "text"  # a .txt predict file: one document per line
        summary = hp.summary_column or (known[1] if known else names[1] if len(names) > 1 else "summary")
        if split == "predict" and summary not in names:
            summary = None
        require_columns(raw, split, {text: "text_column", summary: "summary_column"})
        return (text, None), ((summary, None) if summary else None)

    def _t5_prefix(self) -> str:
        return SUMMARIZE

    def _columns_key(self) -> dict[str, Any]:
        return {"task": "summarization", "columns": [self.hparams.text_column, self.hparams.summary_column]}
