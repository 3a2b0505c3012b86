"""Checks of the values in raw splits: a missing text, pair side or choice is one error naming its file and row.

`datasets` reads a missing value as None: an empty csv cell, a `null` in json, a key absent from some rows' dict.
Tokenizers then fail deep in `map` (`TextEncodeInput must be ...`), or, where lit_hf turned None into "", trained on
empty texts. The checks read Arrow validity bitmaps, so a split of millions of rows costs milliseconds; only dicts
whose keys differ between rows (`datasets` keeps those as JSON text) are decoded row by row.
"""

import json

import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset

from lit_hf.errors import LitHFError

Field = tuple[str, str | None]  # (column, key in a dict column such as WMT's `translation`, or None)


def origin(split: str, files: dict[str, str], dataset_path: str | None, dataset_name: str | None) -> str:
    """Where a raw split comes from, as an error names it: `train_file 'a.jsonl'`, or the split of a dataset."""
    if split in files:
        return f"{split}_file {files[split]!r}"
    if dataset_path:
        return f"the {split} split of dataset_path {dataset_path!r}"
    return f"the {split} split of {dataset_name!r}" if dataset_name else f"the {split} split"


def check_texts(raw: Dataset, where: str, fields: list[Field]) -> None:
    """Every row must hold text in each field (a list column: in each of its items); the first row without is an
    error naming `where` it comes from, the row (1-based, in the order of the file) and the field."""
    for column, key in fields:
        kind = value_type(raw.data.schema.field(column).type, key)
        if kind is not None and not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise LitHFError(f"{where}: {name(column, key)} holds {kind} values, not text; give its text column.")
    check_present(raw, where, fields)


def check_present(raw: Dataset, where: str, fields: list[Field]) -> None:
    """Every row must have a value in each field: the first without is an error naming `where` and the row."""
    for column, key in fields:
        row = first_missing(raw.with_format("arrow")[column], key)  # the rows in order, a `select` applied
        if row is not None:
            raise LitHFError(f"{where}, row {row + 1}: {name(column, key)} is missing; fill it in or remove the row.")


def name(column: str, key: str | None) -> str:
    return f"{key!r} of {column!r}" if key else repr(column)


def value_type(kind: pa.DataType, key: str | None) -> pa.DataType | None:
    """The type of the texts: a column's, a struct field's, a list's items; None where unknown (JSON, nulls only)."""
    if pa.types.is_null(kind) or isinstance(kind, pa.BaseExtensionType):
        return None
    if key is not None and pa.types.is_struct(kind):
        return kind.field(key).type if kind.get_field_index(key) >= 0 else None
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return kind.value_type
    return kind


def first_missing(values: pa.ChunkedArray, key: str | None) -> int | None:
    """The position of the first row whose value (its `key`, for a dict column; any item, for a list) is missing."""
    offset = 0
    for chunk in values.chunks:
        if (found := _first_missing_in(chunk, key)) is not None:
            return offset + found
        offset += len(chunk)
    return None


def _first_missing_in(chunk: pa.Array, key: str | None) -> int | None:
    if isinstance(chunk.type, pa.BaseExtensionType):  # dicts with different keys, kept as JSON text
        rows = (json.loads(text) if text is not None else None for text in chunk.storage.to_pylist())
        return next((i for i, row in enumerate(rows) if row is None or (key and row.get(key) is None)), None)
    if key is not None and pa.types.is_struct(chunk.type):
        chunk = pc.struct_field(chunk, key) if chunk.type.get_field_index(key) >= 0 else pa.nulls(len(chunk))
    missing = chunk.is_null()
    if pa.types.is_list(chunk.type) or pa.types.is_large_list(chunk.type):
        items = pc.list_flatten(chunk)
        parents = pc.list_parent_indices(chunk).filter(items.is_null())
        missing = pc.or_(missing, pc.is_in(pa.array(range(len(chunk))), value_set=parents))
    found = pc.index(missing, True).as_py()
    return None if found < 0 else found
