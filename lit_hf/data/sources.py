"""Raw splits from the hub, local files or a saved dataset, with one clear error for each way that can fail."""

import os
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, DatasetDict

from lit_hf.errors import LitHFError, first_line
from lit_hf.hub import use_offline_mode_if_unreachable

# File endings and the `datasets` builder that reads them.
LOADERS = {".txt": "text", ".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def loader_for(path: str, default: str | None = None) -> str | None:
    """The builder for a file: by its ending, else `default` (language modeling reads any other file as text)."""
    return LOADERS.get(Path(path).suffix.lower(), default)


def check_files(files: dict[str, str | None], default: str | None = None) -> dict[str, str]:
    """The given files by split name; a missing file or an unknown ending is an error naming the option."""
    given = {split: path for split, path in files.items() if path}
    for split, path in given.items():
        if not os.path.isfile(path):
            raise LitHFError(f"{split}_file {path!r} does not exist.")
        if loader_for(path, default) is None:
            raise LitHFError(f"{split}_file {path!r}: unsupported file type; use one of {', '.join(LOADERS)}.")
    return given


def load_files(
    files: dict[str, str], cache_dir: str | None, default: str | None = None, **text_options: Any
) -> DatasetDict:
    """One split per file, read by the builder its ending names (`.tsv` as tab-separated csv)."""
    splits = {}
    for split, path in files.items():
        loader = loader_for(path, default)
        options: dict[str, Any] = dict(text_options) if loader == "text" else {}
        if Path(path).suffix.lower() == ".tsv":
            options["delimiter"] = "\t"
        try:
            splits[split] = datasets.load_dataset(
                loader, data_files={split: path}, split=split, cache_dir=cache_dir, **options
            )
        except Exception as err:  # the builders raise many types for one cause: the file does not parse
            raise LitHFError(f"{split}_file {path!r} could not be read as {loader}: {first_line(err)}") from err
    return DatasetDict(splits)


def load_hub(name: str, config_name: str | None, revision: str | None, cache_dir: str | None) -> DatasetDict:
    use_offline_mode_if_unreachable()
    try:
        return datasets.load_dataset(name, config_name, revision=revision, cache_dir=cache_dir)
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
