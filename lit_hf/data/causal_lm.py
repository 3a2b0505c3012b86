"""Causal-LM data: text from the hub, files or a saved dataset, tokenized and cut into fixed blocks (or strided
evaluation windows), or streamed; prompts for `predict`."""

import functools
from functools import partial
from pathlib import Path
from typing import Any, Literal

from datasets import Dataset, DatasetDict
from datasets.fingerprint import get_temporary_cache_files_directory
from torch.utils.data import DataLoader

from lit_hf.data import causal_lm_stream as stream
from lit_hf.data.base import DataModule, capped_length, linked_config, prepare_splits, running_stage
from lit_hf.data.cache import file_identity
from lit_hf.data.causal_lm_inputs import (
    check_packing,
    check_stride,
    collate_blocks,
    collate_prompts,
    collate_windows,
    nonblank,
    scratch_folder,
    tokenize_and_group,
    tokenize_prompts,
)
from lit_hf.data.sampling import longest_first
from lit_hf.data.sources import carve_validation, check_files, check_sources, loader_for, missing_split, require_columns
from lit_hf.data.values import check_texts
from lit_hf.errors import ConfigError, LitHFError, check_positive
from lit_hf.models import max_positions
from lit_hf.options import HubOptions
from lit_hf.paths import LocalPath, ModelPath

EVAL_SPLITS = ("validation", "test")  # the splits `eval_stride` cuts into windows


class LanguageModelingDataModule(DataModule):
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
            (or whole shards) and all end an epoch at the smallest share's last full batch
            (lit_hf/data/causal_lm_stream.py).
        streaming_shuffle_buffer: With streaming, shuffle blocks in a buffer of this many; 0: stream order.
        eval_stride: Strided (sliding-window) perplexity for validation and test: windows of block_size tokens
            starting every eval_stride tokens, each scoring only the tokens no earlier window scored, so every
            token is predicted with up to a block of context (the Hugging Face guide's method); the last window
            ends at the split's end. At most block_size (equal: disjoint windows); not with packing. Default:
            disjoint blocks, the remainder dropped (lit_hf/data/causal_lm_inputs.py).
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

    family = "causal_lm"

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
        super().__init__(model_name_or_path, hub)
        check_sources(dataset_name or predict_file, dataset_path, [train_file, validation_file, test_file])
        if not 0 <= validation_split_percentage < 100:
            raise ConfigError(f"validation_split_percentage must be in [0, 100), got {validation_split_percentage}.")
        check_positive(block_size=block_size)
        stream.check_options(streaming, dataset_path, streaming_shuffle_buffer)
        check_stride(eval_stride, block_size, packing)

    def prepare_data(self) -> None:
        hp = self.hparams
        check_packing(hp.packing, getattr(linked_config(self.model_name_or_path, self.hub), "model_type", None))
        stream.check_fit(hp.streaming, self.trainer)
        check_stride(hp.eval_stride, self.block_size, hp.packing)  # the default block size, too
        caches = self.caches()
        with scratch_folder(next(iter(caches.values()))[0]) as scratch:  # the blocks before they are saved
            prepare_splits(caches, self.load_raw, partial(self.build, scratch=scratch), hp.overwrite_cache)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.datasets.update(
            {s: data if s == "predict" else data.with_format("numpy") for s, data in self.datasets.items()}
        )

    def train_dataloader(self) -> DataLoader:
        if self.hparams.streaming:  # this process's rows, read as it trains
            return stream.train_loader(self.hparams, self.files(), self.tokenizer, self.block_size, self.trainer)
        return self.train_loader(self.datasets["train"])

    def predict_dataloader(self) -> DataLoader:
        """Left-padded batches of prompts, longest first (less padding; `index` restores file order), sharded."""
        return self.eval_loader("predict", order=longest_first(self.datasets["predict"]))

    def load_raw(self) -> DatasetDict:
        hp = self.hparams
        if hp.streaming:
            return stream.eval_splits(hp, self.files(), needs_validation=running_stage(self.trainer) == "fit")
        raw = self.load_files_or_hub(default="text", keep_linebreaks=hp.keep_linebreaks, sample_by=hp.sample_by)
        for split, rows in raw.items():  # before carving, so that rows are numbered as in the file
            if split != "predict" and hp.text_column in rows.column_names:
                check_texts(rows, self.origin(split), [(hp.text_column, None)])
        return carve_validation(raw, hp.validation_split_percentage)

    def build(self, raw: DatasetDict, split: str, tag: str, scratch: Path | None = None) -> Dataset | None:
        """The split's blocks (or windows, or prompts), written in `scratch` (beside the cache; by default a
        temporary folder of `datasets`) until the cache holds them."""
        if split not in raw:
            if self.optional(split):
                return None
            raise missing_split(split, raw)
        if split == "predict":
            return self._prompts(raw[split], tag)
        stride = self.hparams.eval_stride if split in EVAL_SPLITS else None
        path = Path(scratch or get_temporary_cache_files_directory()) / f"{tag}.arrow"
        return tokenize_and_group(raw[split], split, self.tokenizer, self.hparams, self.block_size, path, stride)

    def cache_key(self, split: str) -> dict[str, Any]:
        hp = self.hparams
        if split == "predict":  # prompts: the predict file only
            return {"source": ["files", file_identity(self.files()["predict"])], "prompt_column": hp.prompt_column}
        carved = split in ("train", "validation") and not hp.validation_file and not hp.streaming
        reads = ("validation", "train") if split == "validation" and carved else (split,)
        return {
            "source": self.source(split, reads),
            "text_column": hp.text_column,
            "keep_linebreaks": hp.keep_linebreaks,
            **({"sample_by": hp.sample_by} if hp.sample_by != "line" else {}),  # options at their default stay out
            **({"add_eos": True} if hp.add_eos_between_documents else {}),
            **({"packing": True} if hp.packing else {}),
            "block_size": self.block_size,
            **({"eval_stride": hp.eval_stride} if hp.eval_stride and split in EVAL_SPLITS else {}),
            "validation_split_percentage": hp.validation_split_percentage if carved else None,
        }

    def collate(self, split: str) -> Any:
        if split == "predict":
            return partial(collate_prompts, pad_token_id=self.tokenizer.pad_token_id)
        return collate_windows if self.hparams.eval_stride and split != "train" else collate_blocks

    def splits(self, stage: str | None = None) -> list[str]:
        """The splits the stage reads (the running trainer's, else all); a streamed train split is not cached."""
        splits = [split for split in super().splits(stage) if not (self.hparams.streaming and split == "train")]
        if "predict" in splits and not self.hparams.predict_file:
            raise LitHFError("predict continues the prompts of --data.predict_file; give one (.txt: one per line).")
        return splits

    def files(self) -> dict[str, str]:
        """The given files; one with another ending than those `datasets` reads is plain text."""
        hp = self.hparams
        files = {"train": hp.train_file, "validation": hp.validation_file, "test": hp.test_file}
        return check_files({**files, "predict": hp.predict_file}, default="text")

    @functools.cached_property
    def block_size(self) -> int:
        """Tokens per block: `--data.block_size`, or min(1024, the tokenizer's and the model's limits). Decided once
        per run (it reads the model's config), then kept."""
        limit = max_positions(linked_config(self.model_name_or_path, self.hub))
        return capped_length(self.hparams.block_size, self.tokenizer, limit, "block_size")

    def _prompts(self, raw: Dataset, tag: str) -> Dataset:
        """The predict file's non-blank prompts, tokenized, with `index` (position among them): a .txt file's lines,
        or the `prompt_column` of a jsonl/json/csv/parquet file."""
        hp = self.hparams
        column = "text" if loader_for(hp.predict_file, "text") == "text" else hp.prompt_column
        require_columns(raw, "predict", {column: "prompt_column"})
        check_texts(raw, f"predict_file {hp.predict_file!r}", [(column, None)])
        raw = raw.filter(nonblank, input_columns=column, batched=True, new_fingerprint=f"{tag}-nonblank")
        if len(raw) == 0:
            raise LitHFError(f"predict_file {hp.predict_file!r} holds no prompts.")
        tokenize = partial(tokenize_prompts, tokenizer=self.tokenizer, column=column)
        prompts = self.map_batched(raw, tokenize, tag, "tokenize", drop=True)
        return prompts.add_column("index", list(range(len(prompts))))
