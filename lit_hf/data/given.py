"""Data modules whose sources are train/validation/test files plus a predict file (`predict` reads the test split
without one): their files, raw splits, cache-key sources, build step and sample limits, written once."""

from collections.abc import Callable
from typing import Any

import lightning as L
from datasets import Dataset, DatasetDict

from lit_hf.data.prepared import running_stage
from lit_hf.data.sources import check_files, load_raw, raw_split, source_identity, source_split
from lit_hf.data.values import origin


def given_files(hp: Any) -> dict[str, str]:
    """The given train/validation/test files and the predict file (`predict` reads the test split without one)."""
    files = {"train": hp.train_file, "validation": hp.validation_file, "test": hp.test_file}
    return check_files({**files, "predict": hp.predict_file})


def load_given(hp: Any) -> DatasetDict:
    sources = {"dataset_name": hp.dataset_name, "dataset_config_name": hp.dataset_config_name}
    return load_raw(given_files(hp), dataset_path=hp.dataset_path, cache_dir=hp.data_cache_dir, **sources)


def given_source(hp: Any, split: str) -> list[Any]:
    """The cache key's source of a split: `predict` is made from the predict file, else from the test split."""
    reads = ("test",) if split == "predict" and not hp.predict_file else (split,)
    sources = {"dataset_name": hp.dataset_name, "dataset_config_name": hp.dataset_config_name}
    return source_identity(given_files(hp), reads, dataset_path=hp.dataset_path, **sources)


def given_origin(hp: Any, split: str) -> str:
    """Where the raw rows of `split` come from, as errors name it (`predict` reads the test split without a file)."""
    name = "test" if split == "predict" and not hp.predict_file else split
    return origin(name, given_files(hp), hp.dataset_path, hp.dataset_name)


def build_given(
    trainer: L.Trainer | None, tokenize: Callable[[Dataset, str, str], Dataset]
) -> Callable[[DatasetDict, str, str], Dataset | None]:
    """`prepare_splits`'s build step: `tokenize(raw split, split, tag)`; validation during fit is optional, and
    outside a trainer every split the data lacks is skipped."""
    stage = running_stage(trainer)

    def build(raw: DatasetDict, split: str, tag: str) -> Dataset | None:
        optional = trainer is None or (split == "validation" and stage == "fit")
        if optional and source_split(raw, split) not in raw:
            return None
        return tokenize(raw_split(raw, split), split, tag)

    return build


def given_limit(hp: Any) -> Callable[[str], int | None]:
    """`max_train_samples` for train, `max_predict_samples` for predict, `max_eval_samples` for the others."""
    limits = {"train": hp.max_train_samples, "predict": hp.max_predict_samples}
    return lambda split: limits.get(split, hp.max_eval_samples)
