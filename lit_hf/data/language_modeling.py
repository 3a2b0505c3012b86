"""Language-modeling data: text from the hub, files or a saved dataset, tokenized and cut into fixed blocks."""

from typing import Any, Literal

import lightning as L
from datasets import Dataset, DatasetDict
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

import lit_hf.data.streaming as streams
from lit_hf.data.cache import file_identity
from lit_hf.data.lm_blocks import scratch_folder
from lit_hf.data.lm_inputs import check_packing, collate_blocks, tokenize_and_group
from lit_hf.data.prepared import (
    STAGE_SPLITS,
    Caches,
    caches,
    capped_length,
    check_sizes,
    linked_config,
    linked_position_limit,
    linked_tokenizer,
    load_splits,
    prepare_splits,
    running_stage,
)
from lit_hf.data.prompts import prepare_prompts, prompt_loader
from lit_hf.data.sampling import eval_dataloader, train_dataloader
from lit_hf.data.sources import (
    carve_validation,
    check_files,
    check_sources,
    load_raw,
    missing_split,
    source_identity,
)
from lit_hf.data.strided import check_stride, collate_windows
from lit_hf.data.values import check_texts, origin
from lit_hf.errors import ConfigError, LitHFError, check_positive
from lit_hf.options import HubOptions, plain_hparams
from lit_hf.paths import LocalPath, ModelPath

EVAL_SPLITS = ("validation", "test")  # the splits `eval_stride` cuts into windows


class LanguageModelingDataModule(L.LightningDataModule):
    """Batches of `input_ids` and `labels`, each (batch_size, block_size), from a stream of all rows of a split.

    Tokenizing and grouping run in `prepare_data` (once per node) into a cache keyed by the tokenizer, the data
    source and the options; `setup` loads it on every process. Evaluation shards the blocks across processes
    without padding or duplicates.

    Args:
        model_name_or_path: The model the data is prepared for: its tokenizer, and its config, whose position limit caps
            the default block size; `hub` may name others. Linked from `--model.model_name_or_path`.
        hub: Where the model's files come from; linked from `--model.hub`.
        dataset_name: Hub dataset id, e.g. `Salesforce/wikitext`. Local files win when both are given.
        dataset_config_name: Hub dataset configuration, e.g. `wikitext-2-raw-v1`.
        train_file: Local training data: .csv, .tsv, .json, .jsonl, .parquet, or plain text (any other ending).
        validation_file: Local validation file, same types.
        test_file: Local test file, same types.
        predict_file: Prompts for `predict`: .txt (one per line, blank lines skipped), or .jsonl/.json/.csv/.parquet
            with a `prompt_column`. `predict` writes `predictions.jsonl` (index, prompt, completion) in file order.
        prompt_column: Column holding the prompts in a jsonl/json/csv/parquet predict_file.
        dataset_path: A DatasetDict written by `save_to_disk`.
        text_column: Column holding the text in csv/json/parquet/hub data (.txt files always give `text`).
        validation_split_percentage: Percent of train used for validation when there is no validation split.
        keep_linebreaks: Keep the line breaks of .txt files.
        sample_by: What one row (document) of a .txt file is: a "line" (run_clm's), a "paragraph" (the text
            between blank lines) or the whole file ("document").
        add_eos_between_documents: Put the tokenizer's end-of-text token after every row (document), so the model
            sees where one ends. Default off: rows are concatenated with nothing between them, as run_clm does.
        packing: Blocks carry `position_ids` restarting at every document, so attention stops at document boundaries
            and no token is predicted from another document (models whose attention mask is built from position
            ids when no attention_mask is given: GPT-2 and Llama checked, and models built like them in
            transformers 5; OPT and BLOOM refused).
        block_size: Tokens per training block. Default: min(1024, the tokenizer's and the model's maximum length).
        streaming: Stream the train split (train_file or dataset_name's), tokenized and grouped as training goes:
            no cache, memory independent of its size; needs --trainer.max_steps. Each process reads every N-th row
            (or whole shards) and all end an epoch at the smallest share's last full batch (lit_hf/data/streaming.py).
        streaming_shuffle_buffer: With streaming, shuffle blocks in a buffer of this many; 0: stream order.
        eval_stride: Strided (sliding-window) perplexity for validation and test: windows of block_size tokens
            starting every eval_stride tokens, each scoring only the tokens no earlier window scored, so every
            token is predicted with up to a block of context (the Hugging Face guide's method); the last window
            ends at the split's end. At most block_size (equal: disjoint windows); not with packing. Default:
            disjoint blocks, the remainder dropped (lit_hf/data/strided.py).
        max_train_samples: Keep only the first N training blocks (debugging, quick runs).
        max_eval_samples: Keep only the first N validation/test blocks (or windows).
        max_predict_samples: Keep only the first N prompts.
        preprocessing_num_workers: Processes for tokenization.
        overwrite_cache: Tokenize again even when a cached result exists.
        data_cache_dir: Where datasets and the tokenized cache go (default: the `datasets` cache).
        batch_size: Training blocks per batch per process.
        eval_batch_size: Evaluation blocks per batch per process (default: batch_size).
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
        text_column: str = "text",
        prompt_column: str = "prompt",
        validation_split_percentage: int = 5,
        keep_linebreaks: bool = True,
        sample_by: Literal["line", "paragraph", "document"] = "line",
        add_eos_between_documents: bool = False,
        packing: bool = False,
        block_size: int | None = None,
        streaming: bool = False,
        streaming_shuffle_buffer: int = 0,
        eval_stride: int | None = None,
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
        if not 0 <= validation_split_percentage < 100:
            raise ConfigError(f"validation_split_percentage must be in [0, 100), got {validation_split_percentage}.")
        check_positive(block_size=block_size)
        streams.check_options(streaming, dataset_path, streaming_shuffle_buffer)
        check_stride(eval_stride, block_size, packing)
        self.datasets: dict[str, Dataset] = {}

    def task_arguments(self) -> dict[str, Any]:
        return {}

    def export_params(self) -> dict[str, dict[str, str]]:
        return {}

    def prepare_data(self) -> None:
        check_packing(
            self.hparams.packing, getattr(linked_config(self.model_name_or_path, self.hub), "model_type", None)
        )
        streams.check_fit(self.hparams.streaming, self.trainer)
        tokenizer = linked_tokenizer(self.model_name_or_path, self.hub)
        block_size = self._block_size(tokenizer)
        check_stride(self.hparams.eval_stride, block_size, self.hparams.packing)  # the default block size, too
        caches = self._caches(tokenizer, block_size)
        streamed = self.hparams.streaming and running_stage(self.trainer) == "fit"  # then train is not in caches
        required = next(iter(caches)) if self.trainer is not None and not streamed else None  # validation is optional

        def build(raw: DatasetDict, split: str, tag: str) -> Dataset | None:
            if split not in raw:
                if split != required:
                    return None
                raise missing_split(split, raw)
            if split == "predict":
                return prepare_prompts(raw[split], self.hparams, tokenizer, tag)
            stride = self.hparams.eval_stride if split in EVAL_SPLITS else None
            path = scratch / f"{tag}.arrow"
            return tokenize_and_group(raw[split], split, tokenizer, self.hparams, block_size, path, stride)

        with scratch_folder(next(iter(caches.values()))[0]) as scratch:  # the blocks before they are saved
            prepare_splits(caches, self._load_raw, build, self.hparams.overwrite_cache)

    def setup(self, stage: str) -> None:
        self.tokenizer = linked_tokenizer(self.model_name_or_path, self.hub)
        hp = self.hparams
        limits = {"train": hp.max_train_samples, "predict": hp.max_predict_samples}
        caches = self._caches(self.tokenizer, self._block_size(self.tokenizer), stage)
        loaded = load_splits(caches, lambda split: limits.get(split, hp.max_eval_samples))
        self.datasets.update({s: data if s == "predict" else data.with_format("numpy") for s, data in loaded.items()})

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        if hp.streaming:  # this process's rows, read as it trains
            size = self._block_size(self.tokenizer)
            return streams.train_loader(hp, self._files(), self.tokenizer, size, self.trainer)
        return train_dataloader(
            self.datasets["train"],
            batch_size=hp.batch_size,
            collate_fn=collate_blocks,
            num_workers=hp.num_workers,
            accumulate=getattr(self.trainer, "accumulate_grad_batches", 1),
        )

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loader("validation") if "validation" in self.datasets else []  # [] skips validation

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return prompt_loader(self.datasets["predict"], self.hparams, self.tokenizer)

    def _eval_loader(self, split: str) -> DataLoader:
        return eval_dataloader(
            self.datasets[split],
            batch_size=self.hparams.eval_batch_size or self.hparams.batch_size,
            collate_fn=collate_windows if self.hparams.eval_stride else collate_blocks,
            num_workers=self.hparams.num_workers,
        )

    def _files(self) -> dict[str, str]:
        hp = self.hparams
        files = {"train": hp.train_file, "validation": hp.validation_file, "test": hp.test_file}
        return check_files({**files, "predict": hp.predict_file}, default="text")

    def _load_raw(self) -> DatasetDict:
        hp = self.hparams
        if hp.streaming:
            return streams.eval_splits(hp, self._files(), needs_validation=running_stage(self.trainer) == "fit")
        sources = {"dataset_name": hp.dataset_name, "dataset_config_name": hp.dataset_config_name}
        raw = load_raw(
            self._files(),
            dataset_path=hp.dataset_path,
            cache_dir=hp.data_cache_dir,
            default="text",
            keep_linebreaks=hp.keep_linebreaks,
            sample_by=hp.sample_by,
            **sources,
        )
        for split, rows in raw.items():  # before carving, so that rows are numbered as in the file
            if split != "predict" and hp.text_column in rows.column_names:
                where = origin(split, self._files(), hp.dataset_path, hp.dataset_name)
                check_texts(rows, where, [(hp.text_column, None)])
        return carve_validation(raw, hp.validation_split_percentage)

    def _caches(self, tokenizer: PreTrainedTokenizerBase, block_size: int, stage: str | None = None) -> Caches:
        """The cache of each split the stage reads (the running trainer's, else all)."""
        hp = self.hparams
        splits = STAGE_SPLITS.get(stage or running_stage(self.trainer) or "", ("train", "validation", "test"))
        splits = [split for split in splits if not (hp.streaming and split == "train")]  # a stream is not cached
        if "predict" in splits and not hp.predict_file:
            raise LitHFError("predict continues the prompts of --data.predict_file; give one (.txt: one per line).")

        def key(split: str) -> dict[str, Any]:
            if split == "predict":  # prompts: the predict file only
                return {"source": ["files", file_identity(self._files()["predict"])], "prompt_column": hp.prompt_column}
            carved = split in ("train", "validation") and not hp.validation_file and not hp.streaming
            reads = ("validation", "train") if split == "validation" and carved else (split,)
            sources = {"dataset_name": hp.dataset_name, "dataset_config_name": hp.dataset_config_name}
            source = source_identity(self._files(), reads, dataset_path=hp.dataset_path, **sources)
            return {
                "source": source,
                "text_column": hp.text_column,
                "keep_linebreaks": hp.keep_linebreaks,
                **({"sample_by": hp.sample_by} if hp.sample_by != "line" else {}),  # older caches stay valid
                **({"add_eos": True} if hp.add_eos_between_documents else {}),
                **({"packing": True} if hp.packing else {}),
                "block_size": block_size,
                **({"eval_stride": hp.eval_stride} if hp.eval_stride and split in EVAL_SPLITS else {}),
                "validation_split_percentage": hp.validation_split_percentage if carved else None,
            }

        return caches(splits, "clm", hp.data_cache_dir, tokenizer, key)

    def _block_size(self, tokenizer: PreTrainedTokenizerBase) -> int:
        return capped_length(
            self.hparams.block_size, tokenizer, linked_position_limit(self.model_name_or_path, self.hub), "block_size"
        )
