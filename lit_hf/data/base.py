"""The split lifecycle every data module shares, written once: which splits a stage reads, build them once into the
cache (`prepare_data`, one process per node), load them on every process (`setup`), cut to `max_*_samples` after the
cache, and the loaders. `DataModule` is the thin base every family's data module subclasses (as in litgpt)."""

import functools
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
from datasets import Dataset, DatasetDict, load_from_disk
from lightning.pytorch.utilities import rank_zero_info
from pyarrow import ArrowException
from torch.utils.data import DataLoader
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from lit_hf.console import datasets_bars
from lit_hf.data.cache import cache_damage, cache_path, is_cached, save_atomically, tokenizer_identity
from lit_hf.data.sampling import eval_dataloader, train_dataloader
from lit_hf.data.sources import check_files, load_raw, raw_split, source_identity, source_split
from lit_hf.data.values import origin
from lit_hf.errors import NO_SPACE_WAY_OUT, ConfigError, LitHFError, check_positive, first_line, no_space
from lit_hf.models import load_config, load_tokenizer, max_positions
from lit_hf.options import HubOptions, plain_hparams

CACHE_FORMAT = 3  # 3: cache folders named after the family (`causal_lm-...`, not `clm-...`)

# The splits each trainer entry point reads (a family with several evaluation sets names them itself).
STAGE_SPLITS = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",), "predict": ("predict",)}

# Raw rows from which preparing a split shows `datasets`' progress bars: smaller ones take seconds, and their bars were
# most of what a quickstart printed (a one-line summary says where the prepared split went).
LONG_PREPARATION = 100_000

Caches = dict[str, tuple[Path, dict[str, Any]]]  # split -> (cache folder, the key it was made from)
CUT = "lit_hf_cut"  # a column the tokenizing transforms add, True where an example was cut to the length limit
CUT_TARGET = "lit_hf_cut_target"  # the same for seq2seq targets, which have their own limit


def check_sizes(hp: Any) -> None:
    """The sizes every data module takes, refused out of range when it is built: a batch or a split cut to no
    examples (`eval_batch_size=0` fell back to `batch_size` unsaid, `max_*_samples=0` failed after the cache was made),
    or fewer than no worker processes."""
    limits = {name: hp[name] for name in ("max_train_samples", "max_eval_samples", "max_predict_samples")}
    check_positive(batch_size=hp.batch_size, eval_batch_size=hp.eval_batch_size, **limits)
    for name in ("num_workers", "preprocessing_num_workers"):
        if hp[name] is not None and hp[name] < 0:
            raise ConfigError(f"{name} must be 0 (work in the main process) or more, got {hp[name]}.")


def running_stage(trainer: L.Trainer | None) -> str | None:
    """The trainer entry point being run (`fit`, `validate`, ...), or None for a data module used on its own."""
    fn = trainer.state.fn if trainer is not None else None
    return getattr(fn, "value", fn)


def linked_tokenizer(model_name_or_path: str | None, hub: HubOptions) -> PreTrainedTokenizerBase:
    """The tokenizer of the model a data module is linked to (the same object the task holds)."""
    name = hub.tokenizer_name or model_name_or_path
    if not name:
        raise ConfigError("model_name_or_path is not set; the CLI links it from --model.model_name_or_path.")
    return load_tokenizer(name, **hub.loading())


def linked_config(model_name_or_path: str | None, hub: HubOptions) -> PretrainedConfig | None:
    """The config of the model a data module is linked to; None when none is named (a tokenizer alone)."""
    name = hub.config_name or model_name_or_path
    return load_config(name, **hub.loading()) if name else None


def linked_position_limit(model_name_or_path: str | None, hub: HubOptions) -> int | None:
    """The position limit of the config of the model a data module is linked to (None without one)."""
    return max_positions(linked_config(model_name_or_path, hub))


def capped_length(requested: int | None, tokenizer: PreTrainedTokenizerBase, limit: int | None, option: str) -> int:
    """A length option: by default min(1024, the tokenizer's and the model's limits); above the model's is an error."""
    if requested is None:
        return min(1024, tokenizer.model_max_length, limit or 1024)
    if limit is not None and requested > limit:
        raise LitHFError(f"{option} {requested} exceeds the model's {limit} positions; lower --data.{option}.")
    return requested


def caches(
    splits: tuple[str, ...] | list[str],
    family: str,
    cache_dir: str | None,
    tokenizer: PreTrainedTokenizerBase | None,
    key: Callable[[str], dict[str, Any]],
) -> Caches:
    """Each split's cache folder and key: `key(split)` holds the family's options, to which the format version,
    the split and the tokenizer's identity are added (hashed once: hashing a tokenizer is not free). Families that
    cache untokenized data (images) pass no tokenizer."""
    identity = tokenizer_identity(tokenizer) if tokenizer is not None else None
    out: Caches = {}
    for split in splits:
        full = {"format": CACHE_FORMAT, "split": split, "tokenizer": identity, **key(split)}
        out[split] = (cache_path(cache_dir, family, full), full)
    return out


def prepare_splits(
    caches: Caches,
    load_raw: Callable[[], DatasetDict],
    build: Callable[[DatasetDict, str, str], Dataset | None],
    overwrite: bool,
) -> None:
    """Build every split that is not cached yet from the raw data (loaded once, only if needed) and save it.

    `build(raw, split, tag)` returns the processed split, or None for an optional split the data does not have.
    `tag` names the cache entry: `map(new_fingerprint=f"{tag}-<step>")` spares `datasets` from hashing the
    tokenizer for its own fingerprint (most of the preprocessing time for GPT-2), since the key already decides.
    A cache found damaged (a file truncated or zeroed) is built again, with a line saying so; a full disk while
    building is one error.
    """
    raw: DatasetDict | None = None
    for split, (path, key) in caches.items():
        if is_cached(path) and not overwrite:
            if (damage := cache_damage(path)) is None:
                continue
            rank_zero_info(f"lit_hf: the cached {split} split {str(path)!r} is damaged ({damage}); building it again.")
        if raw is None:
            with datasets_bars(False):  # split generation; huggingface_hub's download bars stay
                raw = load_raw()
        with datasets_bars(len(raw[split]) >= LONG_PREPARATION if split in raw else False):
            processed = build_split(raw, split, path.name, build)
            if processed is not None:
                save_atomically(DatasetDict({split: processed}), path, key)
                rank_zero_info(f"lit_hf: {split} split prepared: {len(processed):,} examples in {str(path)!r}")


def build_split(
    raw: DatasetDict, split: str, tag: str, build: Callable[[DatasetDict, str, str], Dataset | None]
) -> Dataset | None:
    """`build(raw, split, tag)`, with a full disk as one error."""
    try:
        return build(raw, split, tag)
    except Exception as err:  # `datasets` raises a full disk as it comes, or wrapped in its own error
        if no_space(err):
            raise LitHFError(f"Preparing the {split} split: {NO_SPACE_WAY_OUT}") from err
        raise


def load_splits(caches: Caches, limits: Callable[[str], int | None]) -> dict[str, Dataset]:
    """The cached splits (those the data has: `prepare_data` raised for a needed one that is missing), each cut
    to its first `limits(split)` examples."""
    loaded = {}
    for split, (path, _) in caches.items():
        if is_cached(path):
            loaded[split] = first_n(load_cached(path, split), limits(split))
            if len(loaded[split]) == 0:  # the cache holds no empty split: the limit cut it to nothing
                raise LitHFError(
                    f"The {split} split is empty after keeping its first {limits(split)} examples; raise the "
                    f"--data.max_*_samples option for it or leave it unset."
                )
    return loaded


def load_cached(path: Path, split: str) -> Dataset:
    """A cached split; one that does not load (damaged after `prepare_data` checked it, or `prepare_data` was not
    run) is an error naming the option that builds it again."""
    try:
        return load_from_disk(str(path))[split]
    except (OSError, ArrowException) as err:
        raise LitHFError(
            f"The cached {split} split {str(path)!r} does not load ({first_line(err)}); run again with "
            "--data.overwrite_cache=true to build it again."
        ) from err


def tokenize_with_cut(
    tokenizer: PreTrainedTokenizerBase, max_length: int, truncation: bool | str, padding: bool | str, **texts: Any
) -> tuple[dict[str, list], list[bool]]:
    """`tokenizer(**texts)` (`text`, `text_pair` or `text_target` lists) cut to `max_length` by `truncation` (a
    transformers strategy; False: none), and which rows were cut. The batch is tokenized once, padded but not cut
    (verbose=False: no "longer than the model's maximum" line), which is the answer where no row exceeds the limit;
    only a batch with a row over it is tokenized again, cut."""
    pad_to = max_length if padding == "max_length" else None
    mask = bool(padding)  # a padded row's tokens are its attention mask's ones
    whole = tokenizer(
        **texts, padding=padding, max_length=pad_to, truncation=False, return_attention_mask=mask or None, verbose=False
    )
    lengths = [sum(row) for row in whole["attention_mask"]] if mask else [len(row) for row in whole["input_ids"]]
    cut = [bool(truncation) and length > max_length for length in lengths]
    if not any(cut):
        if mask and "attention_mask" not in tokenizer.model_input_names:
            whole.pop("attention_mask")  # asked for above only to count; the model takes none
        return dict(whole), cut
    return dict(tokenizer(**texts, max_length=max_length, truncation=truncation, padding=padding, verbose=False)), cut


def report_cut(dataset: Dataset, split: str, length: int, what: str = "examples", column: str = CUT) -> Dataset:
    """`dataset` without its `column` (`CUT`), after one line saying how many of its `what` were cut to `length`
    tokens (none: no line). Said where the split is prepared, once, and counted over the whole split, so the same
    on any number of processes."""
    if column not in dataset.column_names:
        return dataset
    count = sum(dataset[column])
    if count:
        rank_zero_info(f"lit_hf: {split} split: {count:,} of {len(dataset):,} {what} cut to {length:,} tokens")
    return dataset.remove_columns(column)


def first_n(dataset: Dataset, limit: int | None) -> Dataset:
    return dataset if limit is None else dataset.select(range(min(limit, len(dataset))))


class DataModule(L.LightningDataModule):
    """What every lit_hf data module holds and does the same way; a family's subclass supplies its raw splits
    (`load_raw`), its build step (`build`), its cache key (`cache_key`) and its collator (`collate`), and overrides
    Lightning's hooks (and the two `DataForTask` methods) only where it has something of its own to do.

    The family's constructor is the config schema: it lists every option, the linked `model_name_or_path` and `hub`
    and the sizes every family takes (`batch_size`, `eval_batch_size`, `num_workers`, `preprocessing_num_workers`,
    `overwrite_cache`, `data_cache_dir`, `max_*_samples`), and passes the two linked ones here.
    `save_hyperparameters` below collects the family's arguments too (Lightning reads every `__init__` frame).
    """

    family: ClassVar[str]
    """The family's one name: its data and task files are named after it, and its cache folders start with it."""
    tokenized: ClassVar[bool] = True
    """Whether the cached splits are token ids, so that the tokenizer is part of their key (images: not)."""

    def __init__(self, model_name_or_path: str | None, hub: HubOptions) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_sizes(self.hparams)
        plain_hparams(self)
        self.model_name_or_path, self.hub = model_name_or_path, hub
        self.datasets: dict[str, Dataset] = {}
        self.calibration_split: str | None = None  # read by every stage once `calibrate_on` names it

    def task_arguments(self) -> dict[str, Any]:
        """`DataForTask`: the task options this data decides (none, unless the family says otherwise)."""
        return {}

    def export_params(self) -> dict[str, dict[str, str]]:
        """`DataForTask`: what an export adds to the model config's `task_specific_params` (nothing by default)."""
        return {}

    def calibrate_on(self, split: str) -> Callable[[int], DataLoader]:
        """`CalibrationData`: `split` is prepared and set up with the stage's splits from now on; returns the loader
        of this process's share of its first K batches (`calibration_loader`)."""
        self.calibration_split = split
        return partial(self.calibration_loader, split)

    def calibration_loader(self, split: str, batches: int) -> DataLoader:
        """The first `batches` batches of eval_batch_size examples of `split`, in order; process r of N takes batches
        r, r + N, ...: whole batches, so every example meets the same batch (the same forward, bit for bit) on 1 and
        N processes."""
        hp, dataset = self.hparams, self.datasets[split]
        size = hp.eval_batch_size or hp.batch_size
        if len(dataset) < batches * size:
            raise LitHFError(
                f"quantization.calibration_batches={batches} needs {batches * size} {split} examples in batches of "
                f"{size}; the split has {len(dataset)}: lower calibration_batches or the eval batch size."
            )
        starts = range(0, batches * size, size)[self.trainer.global_rank :: self.trainer.world_size]
        mine = [list(range(start, start + size)) for start in starts]
        return DataLoader(dataset, batch_sampler=mine, collate_fn=self.collate(split), num_workers=hp.num_workers)

    def prepare_data(self) -> None:
        prepare_splits(self.caches(), self.load_raw, self.build, self.hparams.overwrite_cache)

    def setup(self, stage: str) -> None:
        self.datasets.update(load_splits(self.caches(stage), self.limit))

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self.datasets["train"])

    def val_dataloader(self) -> DataLoader | list:
        return self.eval_loader("validation") if "validation" in self.datasets else []  # [] skips validation

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.eval_loader("predict")

    def load_raw(self) -> DatasetDict:
        """The raw splits (the family's sources)."""
        raise NotImplementedError

    def build(self, raw: DatasetDict, split: str, tag: str) -> Dataset | None:
        """`split` processed for the cache, or None for an optional split the data does not have; `tag` names the
        cache entry (for `map_batched`)."""
        raise NotImplementedError

    def cache_key(self, split: str) -> dict[str, Any]:
        """Every option that shapes the processed `split` (the tokenizer and the split are added by `caches`)."""
        raise NotImplementedError

    def collate(self, split: str) -> Callable[[list[Any]], Any]:
        """The collator of `split`'s batches."""
        raise NotImplementedError

    @functools.cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer of the linked model: the same object the task holds (loaded once per process), so never
        changed here."""
        return linked_tokenizer(self.model_name_or_path, self.hub)

    def splits(self, stage: str | None = None) -> Sequence[str]:
        """The splits a trainer entry point reads; without one, those of the running trainer, else all."""
        return STAGE_SPLITS.get(stage or running_stage(self.trainer) or "", ("train", "validation", "test"))

    def read_splits(self, stage: str | None = None) -> list[str]:
        """The stage's `splits`, and the calibration split when `calibrate_on` named one: those to prepare and load."""
        splits = list(self.splits(stage))
        extra = self.calibration_split
        return splits if extra is None or extra in splits else [*splits, extra]

    def caches(self, stage: str | None = None) -> Caches:
        """The cache folder and key of each split the stage reads."""
        tokenizer = self.tokenizer if self.tokenized else None
        return caches(self.read_splits(stage), self.family, self.hparams.data_cache_dir, tokenizer, self.cache_key)

    def limit(self, split: str) -> int | None:
        """`max_train_samples` for train, `max_predict_samples` for predict, `max_eval_samples` for the others."""
        hp = self.hparams
        return {"train": hp.max_train_samples, "predict": hp.max_predict_samples}.get(split, hp.max_eval_samples)

    def train_loader(
        self, dataset: Dataset, lengths: Sequence[int] | None = None, seed: int | None = None
    ) -> DataLoader:
        hp = self.hparams
        return train_dataloader(
            dataset,
            batch_size=hp.batch_size,
            collate_fn=self.collate("train"),
            num_workers=hp.num_workers,
            accumulate=getattr(self.trainer, "accumulate_grad_batches", 1),  # a global batch is one optimizer step
            lengths=lengths,
            seed=seed,
        )

    def eval_loader(self, split: str, dataset: Dataset | None = None, order: Sequence[int] | None = None) -> DataLoader:
        """`split`'s loader (over `dataset` when given: some of its columns), sharded across processes."""
        hp = self.hparams
        return eval_dataloader(
            self.datasets[split] if dataset is None else dataset,
            batch_size=hp.eval_batch_size or hp.batch_size,
            collate_fn=self.collate(split),
            num_workers=hp.num_workers,
            order=order,
        )

    def pad_multiple(self) -> int | None:
        """8 under mixed precision (tensor cores like 8s) unless every example is padded to the maximum already."""
        precision = str(getattr(self.trainer, "precision", "")) if self.trainer is not None else ""
        return 8 if precision.endswith("-mixed") and not self.hparams.get("pad_to_max_length") else None

    def map_batched(self, dataset: Dataset, fn: Callable[[dict[str, list]], dict[str, list]], tag: str, step: str,
                    drop: bool) -> Dataset:  # fmt: skip
        """`dataset.map(fn, batched=True)` with `preprocessing_num_workers` and `overwrite_cache`, named by the
        cache entry's `tag` (no fingerprint hashing of `fn`); `drop` removes the input columns. A result cached by
        `datasets` that no longer reads (truncated, zeroed) is made again, with a line saying so."""
        hp = self.hparams
        run = partial(
            dataset.map,
            fn,
            batched=True,
            num_proc=hp.preprocessing_num_workers,
            remove_columns=dataset.column_names if drop else None,
            new_fingerprint=f"{tag}-{step}",
            desc=f"{step.capitalize()} {dataset.split or ''}".strip(),
        )
        try:
            return run(load_from_cache_file=not hp.overwrite_cache)
        except (ArrowException, OSError) as err:  # raised reading the cached result; `fn`'s own errors are others
            if hp.overwrite_cache or no_space(err):
                raise
            rank_zero_info(f"lit_hf: the `datasets` cache of step {step!r} is damaged ({first_line(err)}); redoing it.")
            return run(load_from_cache_file=False)

    # What the families read from train/validation/test files, a predict file (`predict` reads the test split
    # without one), a saved dataset or the hub (causal LM, seq2seq, multiple choice).

    def files(self) -> dict[str, str]:
        """The given train/validation/test/predict files by split."""
        hp = self.hparams
        return check_files({split: hp.get(f"{split}_file") for split in ("train", "validation", "test", "predict")})

    def load_files_or_hub(self, default: str | None = None, **options: Any) -> DatasetDict:
        """The raw splits: a saved dataset (with any given files added), else the files, else the hub; `default` is
        how a file with another ending is read, `options` how text files are."""
        hp = self.hparams
        sources = {"dataset_name": hp.dataset_name, "dataset_config_name": hp.dataset_config_name}
        return load_raw(self.files(), dataset_path=hp.dataset_path, cache_dir=hp.data_cache_dir, default=default,
                        **sources, **options)  # fmt: skip

    def source(self, split: str, reads: Sequence[str] | None = None) -> list[Any]:
        """The cache key's source of `split`: the raw splits it is made from (`reads`; by default itself, and for
        `predict` the test split without a predict file)."""
        hp = self.hparams
        reads = reads or (("test",) if split == "predict" and not hp.predict_file else (split,))
        sources = {"dataset_name": hp.dataset_name, "dataset_config_name": hp.dataset_config_name}
        return source_identity(self.files(), tuple(reads), dataset_path=hp.dataset_path, **sources)

    def origin(self, split: str) -> str:
        """Where the raw rows of `split` come from, as errors name it (`predict`: the test split without a file)."""
        hp = self.hparams
        name = "test" if split == "predict" and not hp.get("predict_file") else split
        return origin(name, self.files(), hp.dataset_path, hp.dataset_name)

    def optional(self, split: str) -> bool:
        """Whether the data may lack `split`: validation during fit, and every split outside a trainer."""
        return self.trainer is None or (split == "validation" and running_stage(self.trainer) == "fit")

    def optional_split(self, raw: DatasetDict, split: str) -> Dataset | None:
        """The raw split that feeds `split`; None where it may be missing and is, an error where it may not."""
        if self.optional(split) and source_split(raw, split) not in raw:
            return None
        return raw_split(raw, split)
