"""Summarization data: documents and summaries from the hub, files or a saved dataset, tokenized once per node."""

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
from lit_hf.data.seq2seq_inputs import tokenize_documents
from lit_hf.data.sources import check_sources, require_columns
from lit_hf.data.values import check_texts
from lit_hf.errors import check_positive
from lit_hf.models import T5_FAMILY, max_positions
from lit_hf.options import HubOptions, plain_hparams
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

T5_PREFIX = "summarize: "  # T5's summarization task prefix (T5 paper, CNN/DM and XSum tasks)


class SummarizationDataModule(L.LightningDataModule):
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
        super().__init__()
        self.save_hyperparameters()
        check_sizes(self.hparams)
        plain_hparams(self)
        self.model_name_or_path, self.hub = model_name_or_path, hub
        check_sources(dataset_name or predict_file, dataset_path, [train_file, validation_file, test_file])
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
        before every document, under the key T5's configs use (`summarization`)."""
        return {"summarization": {"prefix": self._settings(notify=False)[1]}}

    def _eval_loader(self, split: str) -> DataLoader:
        return seq2seq_eval_loader(self.datasets[split], self.hparams, self.tokenizer, self.trainer)

    def _columns(self, raw: Dataset, split: str) -> tuple[str, str | None]:
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
        return text, summary

    def _tokenize(
        self, raw: Dataset, split: str, tokenizer: PreTrainedTokenizerBase, prefix: str, max_source: int, tag: str
    ) -> Dataset:
        hp = self.hparams
        text, summary = self._columns(raw, split)
        scored = [(summary, None)] if summary and split != "predict" else []  # predict writes no score
        check_texts(raw, given_origin(hp, split), [(text, None), *scored])
        max_target = hp.max_target_length if split == "train" else hp.val_max_target_length or hp.max_target_length
        fn = partial(
            tokenize_documents,
            tokenizer=tokenizer,
            text_column=text,
            summary_column=summary,
            prefix=prefix,
            max_source_length=max_source,
            max_target_length=max_target,
            pad_to_max_length=hp.pad_to_max_length,
            ignore_pad_token_for_loss=hp.ignore_pad_token_for_loss,
        )
        examples = map_batched(raw, fn, tag, "tokenize", hp, drop=True)
        return examples.add_column("index", list(range(len(examples))))

    def _caches(
        self, tokenizer: PreTrainedTokenizerBase, prefix: str, max_source: int, stage: str | None = None
    ) -> Caches:
        """The cache of each split the stage reads (the running trainer's, else all)."""
        hp = self.hparams
        splits = STAGE_SPLITS.get(stage or running_stage(self.trainer) or "", ("train", "validation", "test"))

        def key(split: str) -> dict[str, Any]:
            return {
                "source": given_source(hp, split),
                "columns": [hp.text_column, hp.summary_column],
                "prefix": prefix,
                "lengths": [max_source, hp.max_target_length, hp.val_max_target_length if split != "train" else None],
                "padding": [hp.pad_to_max_length, hp.ignore_pad_token_for_loss],
            }

        return caches(splits, "summarization", hp.data_cache_dir, tokenizer, key)

    def _settings(self, notify: bool) -> tuple[PreTrainedTokenizerBase, str, int]:
        """The tokenizer, the source prefix and the source length limit."""
        hp = self.hparams
        tokenizer = linked_tokenizer(self.model_name_or_path, self.hub)
        config = linked_config(self.model_name_or_path, self.hub)
        prefix = hp.source_prefix
        if prefix is None:
            is_t5 = getattr(config, "model_type", None) in T5_FAMILY
            prefix = T5_PREFIX if is_t5 else ""
            if is_t5 and notify:
                rank_zero_info(f"T5 model: source prefix {prefix!r} (set --data.source_prefix to change it).")
        limit = max_positions(config)
        return tokenizer, prefix, capped_length(hp.max_source_length, tokenizer, limit, "max_source_length")
