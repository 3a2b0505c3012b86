"""Raw splits from the hub, local files or a saved dataset, with one clear error for each way that can fail."""

import json
import os
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, DatasetDict, IterableDatasetDict

from lit_hf.data.cache import file_identity, tree_identity
from lit_hf.errors import ConfigError, LitHFError, first_line
from lit_hf.hub import use_offline_mode_if_unreachable

# File endings and the `datasets` builder that reads them.
LOADERS = {".txt": "text", ".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def check_sources(dataset_name: str | None, dataset_path: str | None, files: list[str | None]) -> None:
    """A data module needs one source: the hub, local files or a saved dataset (files and a saved one exclude)."""
    if not (dataset_name or dataset_path or any(files)):
        raise ConfigError("Give a data source: dataset_name, train_file/validation_file/test_file or dataset_path.")
    if dataset_path and any(files):
        raise ConfigError("Give either dataset_path or train_file/validation_file/test_file, not both.")


def loader_for(path: str, default: str | None = None) -> str | None:
    """The builder for a file: by its ending, else `default` (language modeling reads any other file as text)."""
    return LOADERS.get(Path(path).suffix.lower(), default)


def check_files(files: dict[str, str | None], default: str | None = None) -> dict[str, str]:
    """The given files by split name; a missing file or an unknown ending is an error naming the option."""
    given = {split: path for split, path in files.items() if path}
    for split, path in given.items():
        if os.path.isdir(path):
            raise LitHFError(f"{split}_file {path!r} is a directory; give a file in it.")
        if not os.path.isfile(path):
            raise LitHFError(f"{split}_file {path!r} does not exist.")
        if loader_for(path, default) is None:
            raise LitHFError(f"{split}_file {path!r}: unsupported file type; use one of {', '.join(LOADERS)}.")
    return given


def load_files(
    files: dict[str, str],
    cache_dir: str | None,
    default: str | None = None,
    streaming: bool = False,
    **text_options: Any,
) -> DatasetDict | IterableDatasetDict:
    """One split per file, read by the builder its ending names (`.tsv` as tab-separated csv); with `streaming`, as
    streams read while they are iterated (nothing converted or cached)."""
    splits = {}
    for split, path in files.items():
        loader = loader_for(path, default)
        options: dict[str, Any] = dict(text_options) if loader == "text" else {}
        if Path(path).suffix.lower() == ".tsv":
            options["delimiter"] = "\t"
        try:
            splits[split] = datasets.load_dataset(
                loader, data_files={split: path}, split=split, cache_dir=cache_dir, streaming=streaming, **options
            )
        except Exception as err:  # the builders raise many types for one cause: the file does not parse
            cause = unreadable_cause(path, loader) or first_line(err)
            raise LitHFError(f"{split}_file {path!r} could not be read as {loader}: {cause}") from err
    return IterableDatasetDict(splits) if streaming else DatasetDict(splits)


def unreadable_cause(path: str, loader: str | None) -> str | None:
    """Why a file did not load, found by reading it (`datasets` says only "An error occurred while generating the
    dataset"): empty, not UTF-8 (with the line), or, for json, the first line that does not parse."""
    if os.path.getsize(path) == 0:
        return "the file is empty; give a file with data."
    per_line = loader == "json" and _json_lines(path)
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                return f"line {number} is not UTF-8 text ({err.reason} at byte {err.start}); save the file as UTF-8."
            if per_line and line.strip() and (problem := _json_problem(line)):
                return f"line {number} is not valid JSON ({problem}); fix or remove it."
    return None


def _json_lines(path: str) -> bool:
    """A .json file written one object per line (as `datasets` reads it) rather than one document."""
    with open(path, "rb") as f:
        return f.read(1).strip() != b"["


def _json_problem(line: str) -> str | None:
    try:
        json.loads(line)
    except json.JSONDecodeError as err:
        return f"{err.msg}, column {err.colno}"
    return None


def missing_split(split: str, raw: DatasetDict) -> LitHFError:
    """The error for a split the stage needs and the data lacks, naming the option that gives it."""
    way_out = f"; give one with --data.{split}_file" if split in ("train", "validation", "test") else ""
    return LitHFError(f"The data has no {split} split (it has: {', '.join(raw) or 'none'}){way_out}.")


def load_hub(
    name: str, config_name: str | None, revision: str | None, cache_dir: str | None, streaming: bool = False
) -> DatasetDict | IterableDatasetDict:
    use_offline_mode_if_unreachable()
    try:
        return datasets.load_dataset(name, config_name, revision=revision, cache_dir=cache_dir, streaming=streaming)
    except (ConnectionError, OSError) as err:
        raise LitHFError(
            f"Could not load the dataset {name!r}"
            + (f" ({config_name})" if config_name else "")
            + ": the Hugging Face Hub could not be reached (or offline mode is on) and it is not in the cache. "
            "Use local files (train_file/validation_file/test_file) or a saved dataset (dataset_path), pre-fill the "
            "cache where the network is available, or point HF_ENDPOINT at a reachable mirror."
        ) from err
    except ValueError as err:  # e.g. an unknown configuration name
        raise LitHFError(f"Could not load the dataset {name!r}: {first_line(err)}") from err


def load_saved(path: str) -> DatasetDict:
    if not os.path.isdir(path):
        raise LitHFError(f"dataset_path {path!r} does not exist; give a directory written by `save_to_disk`.")
    try:
        loaded = datasets.load_from_disk(path)
    except FileNotFoundError as err:
        raise LitHFError(f"dataset_path {path!r} is not a dataset saved with `save_to_disk`.") from err
    return loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})


def carve_validation(raw: DatasetDict, percentage: int) -> DatasetDict:
    """Without a validation split, the first `percentage` % of train becomes one, as `run_clm.py` does."""
    if "validation" in raw or "train" not in raw or not percentage:
        return raw
    train: Dataset = raw["train"]
    cut = int(round(len(train) * percentage / 100))  # datasets' "closest" rounding for train[:p%]
    out = DatasetDict(raw)
    out["validation"] = train.select(range(cut))
    out["train"] = train.select(range(cut, len(train)))
    return out


def require_columns(raw: Dataset, split: str, columns: dict[str | None, str]) -> None:
    """The split must be non-empty and have each column (mapped to the option that names it; None: not needed)."""
    for column, option in columns.items():
        if column and column not in raw.column_names:
            raise LitHFError(
                f"The {split} split has no column {column!r} (columns: {', '.join(raw.column_names)}); "
                f"set --data.{option}."
            )
    if len(raw) == 0:
        raise LitHFError(f"The {split} split is empty.")


def load_raw(
    files: dict[str, str],
    *,
    dataset_path: str | None,
    dataset_name: str | None,
    dataset_config_name: str | None,
    cache_dir: str | None,
    default: str | None = None,
    **text_options: Any,
) -> DatasetDict:
    """The raw splits from a saved dataset (with any given files added), else the files, else the hub."""
    if dataset_path:
        saved = load_saved(dataset_path)
        return DatasetDict({**saved, **load_files(files, cache_dir, default, **text_options)}) if files else saved
    if files:
        return load_files(files, cache_dir, default, **text_options)
    if dataset_name:
        return load_hub(dataset_name, dataset_config_name, None, cache_dir)
    raise LitHFError("No data source gives the splits this run needs; set train_file/validation_file/test_file.")


def source_identity(
    files: dict[str, str],
    reads: tuple[str, ...],
    *,
    dataset_path: str | None,
    dataset_name: str | None,
    dataset_config_name: str | None,
) -> list[Any]:
    """What a split was made from, for its cache key: the files it `reads` (split names), the saved dataset's
    files, or the hub id. Unchanged files give the same identity without being read."""
    if dataset_path and not any(split in files for split in reads):
        return ["saved", tree_identity(dataset_path)]
    if files:
        return ["files", {split: file_identity(files[split]) for split in reads if split in files}]
    return ["hub", dataset_name, dataset_config_name]


def source_split(raw: DatasetDict, split: str) -> str:
    """The raw split that feeds `split`: `predict` reads the test split unless a predict_file was given."""
    return "test" if split == "predict" and "predict" not in raw else split


def raw_split(raw: DatasetDict, split: str) -> Dataset:
    """The raw split that feeds `split`; an absent or empty one is an error naming the option that gives it."""
    name = source_split(raw, split)
    if name not in raw:
        option = "predict_file" if split == "predict" else f"{split}_file"
        raise LitHFError(f"The data has no {name} split (it has: {', '.join(raw) or 'none'}); set --data.{option}.")
    if len(raw[name]) == 0:
        raise LitHFError(f"The {name} split is empty.")
    return raw[name]
