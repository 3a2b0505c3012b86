"""A processed-dataset cache keyed by everything that shapes the result, written once per node, read on every rank."""

import json
import os
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
from datasets import DatasetDict
from datasets.fingerprint import Hasher
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerBase

from lit_hf.atomic import replaced
from lit_hf.errors import NO_SPACE_WAY_OUT, LitHFError, first_line, no_space

KEY_FILE = "lit_hf_key.json"  # written last: a cache folder without it is not a cache
MANIFEST = "lit_hf_files.json"  # each Arrow file's size and rows, so a truncated or zeroed one is found at once


def file_identity(path: str) -> list[Any]:
    """Path, size and modification time: changes whenever the file does, without reading it."""
    stat = os.stat(path)
    return [os.path.abspath(path), stat.st_size, stat.st_mtime_ns]


def tree_identity(path: str) -> list[Any]:
    """`file_identity` of the files of a dataset saved with `save_to_disk`, not the `cache-*` files `map` adds."""
    files = sorted(p for p in Path(path).rglob("*") if p.is_file() and not p.name.startswith("cache-"))
    return [file_identity(str(p)) for p in files]


def tokenizer_identity(tokenizer: PreTrainedTokenizerBase) -> str:
    """Hash of the vocabulary, merges, normalisation and special tokens: what decides the token ids."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        spec = Hasher.hash(tokenizer.get_vocab())
    else:
        spec = backend_spec(backend)
    return Hasher.hash([type(tokenizer).__name__, spec, tokenizer.all_special_tokens, tokenizer.padding_side])


def backend_spec(backend: Tokenizer) -> str:
    """A fast tokenizer's own JSON as it serializes itself without call state: a call with truncation or padding
    leaves them in the backend. Hashed as that text: parsing and re-serializing GPT-2's took 0.7 s (hashing the
    parsed vocabulary and merges 4x more); the text itself costs 0.05 s."""
    serialized = backend.to_str()
    if backend.truncation is None and backend.padding is None:
        return serialized
    decoder = json.JSONDecoder()
    for name in ("truncation", "padding"):  # top-level keys, written right after "version"
        start = serialized.index(f'"{name}":') + len(name) + 3
        _, end = decoder.raw_decode(serialized, start)
        serialized = serialized[:start] + "null" + serialized[end:]
    return serialized


def cache_path(cache_dir: str | None, family: str, key: dict[str, Any]) -> Path:
    """`<cache_dir or the datasets cache>/lit_hf/<family>-<hash of key>`; the key is also saved beside it."""
    root = Path(cache_dir) if cache_dir else Path(datasets.config.HF_DATASETS_CACHE)
    digest = Hasher.hash(json.dumps(key, sort_keys=True, default=str))
    return root / "lit_hf" / f"{family}-{digest}"


def save_atomically(processed: DatasetDict, path: Path, key: dict[str, Any]) -> None:
    """Write to a temporary sibling, then rename: readers never see a half-written cache (the key file, which
    `is_cached` looks for, is written last, after the manifest of the Arrow files). Leftovers of runs killed while
    writing are removed; a full disk is one error and leaves nothing behind."""
    try:
        with replaced(path) as tmp:
            processed.save_to_disk(str(tmp))
            (tmp / MANIFEST).write_text(json.dumps(manifest(tmp), indent=1, sort_keys=True))
            (tmp / KEY_FILE).write_text(json.dumps(key, indent=2, sort_keys=True, default=str))
    except OSError as err:  # another node on a shared filesystem finished first; its result is the same
        if no_space(err):
            raise LitHFError(f"Writing the cache {str(path)!r}: {NO_SPACE_WAY_OUT}") from err
        if not is_cached(path):
            raise


def is_cached(path: Path) -> bool:
    return (path / KEY_FILE).exists()


def manifest(folder: Path) -> dict[str, list[int]]:
    """Each Arrow file under `folder` (relative path) -> [bytes, rows]."""
    return {str(p.relative_to(folder)): [p.stat().st_size, arrow_rows(p)] for p in sorted(folder.rglob("*.arrow"))}


def arrow_rows(path: Path) -> int:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_stream(source).read_all().num_rows


def arrow_damage(path: Path) -> str | None:
    """Why an Arrow stream file does not read (truncated: a message body cut short; zeroed: no schema), or None.
    Only the message headers are read: the data stays memory-mapped."""
    try:
        arrow_rows(path)
    except (OSError, pa.ArrowException) as err:
        return f"{path.name}: {first_line(err)}"
    return None


def cache_damage(path: Path) -> str | None:
    """Why a cache folder cannot be used as it is, or None. Its manifest (caches written before it existed have
    none) gives each file's size and rows, so a truncated file is found from its size alone and one zeroed in place
    from its rows; without it, each file must read."""
    listed = path / MANIFEST
    expected = json.loads(listed.read_text()) if listed.exists() else None
    if expected is None:
        return next(filter(None, map(arrow_damage, sorted(path.rglob("*.arrow")))), None)
    for name, (size, rows) in expected.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} bytes, not {size}"
        try:
            found = arrow_rows(file)
        except (OSError, pa.ArrowException) as err:
            return f"{name}: {first_line(err)}"
        if found != rows:
            return f"{name} holds {found} rows, not {rows}"
    return None
