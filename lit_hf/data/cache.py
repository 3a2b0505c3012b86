"""A processed-dataset cache keyed by everything that shapes the result, written once per node, read on every rank."""

import json
import os
from pathlib import Path
from typing import Any

import datasets
from datasets import DatasetDict
from datasets.fingerprint import Hasher
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerBase

from lit_hf.atomic import replaced


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
    `is_cached` looks for, is written last). Leftovers of runs killed while writing are removed."""
    try:
        with replaced(path) as tmp:
            processed.save_to_disk(str(tmp))
            (tmp / "lit_hf_key.json").write_text(json.dumps(key, indent=2, sort_keys=True, default=str))
    except OSError:  # another node on a shared filesystem finished first; its result is the same
        if not is_cached(path):
            raise


def is_cached(path: Path) -> bool:
    return (path / "lit_hf_key.json").exists()
