"""Raw splits from the hub, local files or a saved dataset, with one clear error for each way that can fail."""

import json
import os
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict
from datasets.exceptions import DatasetGenerationError
from lightning.pytorch.utilities import rank_zero_info

from lit_hf.data.cache import arrow_damage, file_identity, tree_identity
from lit_hf.errors import NO_SPACE_WAY_OUT, ConfigError, LitHFError, first_line, no_space
from lit_hf.hub import use_offline_mode_if_unreachable

# File endings and the `datasets` builder that reads them.
LOADERS = {".txt": "text", ".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}

STREAM_SCAN_BYTES = 1 << 24  # a streamed file is checked for UTF-16 in its first 16 MiB, not read twice whole


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
    streams read while they are iterated (nothing converted or cached). Text files must be UTF-8."""
    splits = {}
    for split, path in files.items():
        loader = loader_for(path, default)
        options: dict[str, Any] = dict(text_options) if loader == "text" else {}
        if Path(path).suffix.lower() == ".tsv":
            options["delimiter"] = "\t"
        if loader != "parquet":
            check_utf8(path, f"{split}_file", limit=STREAM_SCAN_BYTES if streaming else None)
        splits[split] = load_file(loader, path, split, streaming, cache_dir=cache_dir, **options)
    return IterableDatasetDict(splits) if streaming else DatasetDict(splits)


def load_file(loader: str, path: str, split: str, streaming: bool, **options: Any) -> Dataset | IterableDataset:
    """One file as the `split` of `datasets`' `loader` builder, with one error naming the file and why it did not
    load. When the file is fine but its conversion in the `datasets` cache is truncated or zeroed, it is converted
    again, with a line saying so (otherwise every run would fail alike, `overwrite_cache` or not)."""
    name, options = f"{split}_file {path!r}", {"data_files": {split: path}, **options}
    try:
        return datasets.load_dataset(loader, split=split, streaming=streaming, **options)
    except Exception as err:  # the builders raise many types for one cause: the file does not parse
        if no_space(err):
            raise LitHFError(f"Converting {name} into the `datasets` cache: {NO_SPACE_WAY_OUT}") from err
        cause = unreadable_cause(path, loader)
        again = not (streaming or isinstance(err, DatasetGenerationError) or "download_mode" in options)
        if cause is None and again and (damage := conversion_damage(loader, options)):
            rank_zero_info(f"lit_hf: the `datasets` cache of {name} is damaged ({damage}); converting it again.")
            return load_file(loader, path, split, streaming, **options, download_mode="force_redownload")
        raise LitHFError(f"{name} could not be read as {loader}: {cause or explain(err)}") from err


def conversion_damage(loader: str, options: dict[str, Any]) -> str | None:
    """Why an Arrow file of a file's conversion in the `datasets` cache does not read; None when all do."""
    try:
        folder = Path(datasets.load_dataset_builder(loader, **options).cache_dir)
    except Exception:  # (no builder, so no cache of it to blame)
        return None
    return next(filter(None, map(arrow_damage, sorted(folder.glob("*.arrow")))), None)


def check_utf8(path: str, option: str, limit: int | None = None) -> None:
    """A text, csv or json file must be UTF-8. UTF-16 without a byte-order mark decodes as UTF-8 without an error
    (an ASCII character is its byte and a NUL), so it is found by its NUL bytes, which UTF-8 text never holds:
    one pass over the file (its first `limit` bytes when it is streamed)."""
    with open(path, "rb") as f:
        if f.read(2) in (b"\xff\xfe", b"\xfe\xff"):
            raise LitHFError(f"{option} {path!r} is UTF-16 (it starts with a byte-order mark), not UTF-8; {as_utf8()}")
        f.seek(0)
        line, read = 1, 0
        while (chunk := f.read(1 << 24)) and (limit is None or read < limit):
            if (at := chunk.find(b"\0")) >= 0:
                guess = "UTF-16LE" if (read + at) % 2 else "UTF-16BE"  # LE puts the NUL after an ASCII byte
                line += chunk.count(b"\n", 0, at)
                raise LitHFError(
                    f"{option} {path!r} is not UTF-8 text: line {line} holds NUL bytes ({guess} text, or binary "
                    f"data); {as_utf8(guess)}"
                )
            line, read = line + chunk.count(b"\n"), read + len(chunk)


def as_utf8(encoding: str = "UTF-16") -> str:
    return f"save it as UTF-8 (e.g. `iconv -f {encoding} -t UTF-8`)."


def explain(err: BaseException) -> str:
    """What went wrong, in a line: for a parse error, its deepest cause (`datasets` wraps pandas' "Error tokenizing
    data. C error: Expected 2 fields in line 4, saw 3" in "An error occurred while generating the dataset")."""
    if isinstance(err, DatasetGenerationError):
        while (cause := err.__cause__ or err.__context__) is not None:
            err = cause
    text = first_line(err)
    return "it holds no rows; give a file with data." if "corresponds to no data" in text else text


def unreadable_cause(path: str, loader: str | None) -> str | None:
    """Why a file did not load, found by reading it (`datasets` says only "An error occurred while generating the
    dataset"): empty, not UTF-8 (with the line), or, for json, the first line that does not parse."""
    if os.path.getsize(path) == 0:
        return "the file is empty; give a file with data."
    if loader == "parquet":
        return None
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
    """A hub dataset, or a local folder of data files given as `dataset_name` (as `datasets` reads one)."""
    if is_local(name):
        return load_local(name, config_name, cache_dir, streaming)
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


def is_local(name: str) -> bool:
    """A `dataset_name` that names a local path: absolute, `./`, `../` or `~`, or an existing file or folder (a hub
    id `org/name` is read from the hub unless such a folder exists here, as `datasets` does)."""
    return os.path.isabs(name) or name.startswith((".", "~")) or os.path.exists(name)


def load_local(name: str, config_name: str | None, cache_dir: str | None, streaming: bool) -> DatasetDict:
    """A local folder given as `dataset_name`: its data files by split (`train.csv`, `validation.jsonl`, ...)."""
    path = os.path.expanduser(name)
    if not os.path.exists(path):
        raise LitHFError(f"dataset_name {name!r} is a local path that does not exist; give a folder of data files.")
    if os.path.isfile(path):
        raise LitHFError(
            f"dataset_name {name!r} is a file; give it as --data.train_file (or its folder as dataset_name)."
        )
    try:
        return datasets.load_dataset(path, config_name, cache_dir=cache_dir, streaming=streaming)
    except Exception as err:  # no data files, a folder saved with `save_to_disk`, a file that does not parse
        if no_space(err):
            raise LitHFError(f"Converting dataset_name {name!r} into the `datasets` cache: {NO_SPACE_WAY_OUT}") from err
        if "save_to_disk" in str(err):
            raise LitHFError(
                f"dataset_name {name!r} was saved with `save_to_disk`; give it as --data.dataset_path."
            ) from err
        raise LitHFError(f"dataset_name {name!r} could not be read: {explain(err)}") from err


def load_saved(path: str) -> DatasetDict:
    if os.path.isfile(path):
        raise LitHFError(f"dataset_path {path!r} is a file; give the directory `save_to_disk` wrote.")
    if not os.path.isdir(path):
        raise LitHFError(f"dataset_path {path!r} does not exist; give a directory written by `save_to_disk`.")
    try:
        loaded = datasets.load_from_disk(path)
    except FileNotFoundError as err:
        raise LitHFError(f"dataset_path {path!r} is not a dataset saved with `save_to_disk`.") from err
    except Exception as err:  # a damaged file in it: pyarrow's errors, or json's for its metadata
        raise LitHFError(f"dataset_path {path!r} could not be read: {explain(err)}; save it again.") from err
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
        raise LitHFError(f"The {split} split is empty; give data with rows for it.")


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
        raise LitHFError(f"The {name} split is empty; give data with rows for it.")
    return raw[name]
