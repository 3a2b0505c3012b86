"""The split lifecycle every data module shares: which splits a stage reads, build once into the cache
(`prepare_data`, one process per node), load on every process (`setup`), cut to `max_*_samples` after the cache."""

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
from datasets import Dataset, DatasetDict, load_from_disk
from lightning.pytorch.utilities import rank_zero_info
from pyarrow import ArrowException
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from lit_hf.data.cache import cache_damage, cache_path, is_cached, save_atomically, tokenizer_identity
from lit_hf.errors import NO_SPACE_WAY_OUT, ConfigError, LitHFError, check_positive, first_line, no_space
from lit_hf.models import load_config, load_tokenizer, max_positions
from lit_hf.options import HubOptions

# The splits each trainer entry point reads (a family with several evaluation sets names them itself).
STAGE_SPLITS = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",), "predict": ("predict",)}

Caches = dict[str, tuple[Path, dict[str, Any]]]  # split -> (cache folder, the key it was made from)


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
        full = {"format": 2, "split": split, "tokenizer": identity, **key(split)}
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
        raw = raw if raw is not None else load_raw()
        try:
            processed = build(raw, split, path.name)
        except Exception as err:  # `datasets` raises a full disk as it comes, or wrapped in its own error
            if no_space(err):
                raise LitHFError(f"Preparing the {split} split: {NO_SPACE_WAY_OUT}") from err
            raise
        if processed is not None:
            save_atomically(DatasetDict({split: processed}), path, key)


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


def map_batched(
    dataset: Dataset, fn: Callable[[dict[str, list]], dict[str, list]], tag: str, step: str, hp: Any, drop: bool
) -> Dataset:
    """`dataset.map(fn, batched=True)` with the data module's `preprocessing_num_workers` and `overwrite_cache`,
    named by the cache entry's `tag` (no fingerprint hashing of `fn`); `drop` removes the input columns. A result
    cached by `datasets` that no longer reads (truncated, zeroed) is made again, with a line saying so."""
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


def first_n(dataset: Dataset, limit: int | None) -> Dataset:
    return dataset if limit is None else dataset.select(range(min(limit, len(dataset))))
