"""What a checkpoint may decide: its weights and plain values, read without running code; never which model (or
whose code) a run loads, and no path outside the run's own folder."""

import io
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from lit_hf.errors import LitHFError, say

# The options that choose which files a run loads. The config and the command line decide them; a checkpoint's
# saved value is used only where the user gave none. Dotted names into the task's options (`lit_hf.options`).
MODEL_OPTIONS = (
    "model_name_or_path", "hub.config_name", "hub.tokenizer_name", "hub.image_processor_name", "hub.revision"
)  # fmt: skip
# Runs Python files of the model's folder (`auto_map`): only the user switches it on, never a checkpoint.
REMOTE_CODE = "hub.trust_remote_code"
# How this run evaluates the weights, and a quantizer plug-in is a class path to import: the user's, never a
# checkpoint's (a fit with quantization saves it in its hyperparameters).
QUANTIZATION = "quantization"

# What a torch.distributed.checkpoint `.metadata` pickle names (torch 2.4 to 2.13): its dataclasses, shapes, dtypes
# and the checkpoint's own path. Anything else in it is refused unread, as `torch.load(weights_only=True)` would.
SHARDED_METADATA = {
    "torch.distributed.checkpoint.metadata": {
        "Metadata", "TensorStorageMetadata", "TensorProperties", "ChunkStorageMetadata", "BytesStorageMetadata",
        "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING",
    },
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch": {"Size"},
    "torch.serialization": {"_get_layout"},
    "pathlib": {"Path", "PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath"},
    "collections": {"OrderedDict"},
}  # fmt: skip
SHARDED_EXTRA = "meta.pt"  # Lightning's file of everything beside the weights in a sharded checkpoint


def checkpoint_choices(path: str, saved: dict[str, Any], given: Any, chosen: set[str]) -> dict[str, Any]:
    """`saved` (a checkpoint's hyperparameters) without the options it may not decide: the model options the user
    gave (`chosen`: on the command line or set away from their defaults in `given`, the parsed `--model` options),
    which must name the same model, and `trust_remote_code` and `quantization`, which stay the user's."""
    kept = dict(saved)
    for name in (name for name in MODEL_OPTIONS if name in chosen):  # the others: the checkpoint's own model
        theirs, ours = _get(saved, name), _get(given, name)
        if theirs is not None and not same_model(theirs, ours):
            _disagree(path, name, theirs, ours)
        _drop(kept, name)
    if _get(saved, REMOTE_CODE) and not _get(given, REMOTE_CODE):
        model = _get(kept, "model_name_or_path") or _get(given, "model_name_or_path")  # the one that will load
        raise LitHFError(
            f"--ckpt_path {path!r} was trained with {REMOTE_CODE}=true, which a checkpoint cannot switch on (it runs "
            f"the model folder's Python code); give --model.{REMOTE_CODE}=true yourself if you trust the code of "
            f"{model!r}."
        )
    _drop(kept, REMOTE_CODE)
    _drop(kept, QUANTIZATION)
    return kept


def same_model(saved: Any, given: Any) -> bool:
    """The same hub id or revision, or the same local folder under two names."""
    if saved == given:
        return True
    both = isinstance(saved, str) and isinstance(given, str) and os.path.isdir(saved) and os.path.isdir(given)
    return both and os.path.samefile(saved, given)


def inside(path: str | Path, folder: str | Path) -> bool:
    """Whether `path` lies in `folder` once links and `..` are resolved."""
    return Path(folder).resolve() in Path(path).resolve().parents


def check_sharded_checkpoint(folder: Path) -> None:
    """Reads a torch.distributed.checkpoint folder as `weights_only=True` reads a file: its `.metadata` pickle through
    an allow-list, every non-tensor entry and `meta.pt` with `weights_only=True`. torch's own reader unpickles both
    in full, so a folder that passes here is one whose loading runs no code of its own."""
    try:
        with open(folder / ".metadata", "rb") as file:
            metadata = MetadataUnpickler(file).load()
        for index, info in metadata.storage_data.items():
            if type(metadata.state_dict_metadata[index.fqn]).__name__ == "BytesStorageMetadata":
                _load_plain_entry(folder, info)
        if (folder / SHARDED_EXTRA).is_file():
            torch.load(folder / SHARDED_EXTRA, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # (a cut or foreign folder fails anywhere in the reading)
        if isinstance(err, pickle.UnpicklingError) or "Weights only load failed" in str(err):
            raise LitHFError(unsafe_message(str(folder))) from err
        raise LitHFError(
            f"--ckpt_path {str(folder)!r} is not a complete sharded checkpoint ({type(err).__name__}: {err}); give "
            "another one, e.g. an earlier checkpoint of the same run."
        ) from err


def unsafe_message(path: str) -> str:
    return (
        f"--ckpt_path {path!r} holds Python objects beyond tensors and plain values, which are not loaded "
        "(weights_only=True: loading them would run code from the file); give a checkpoint lit_hf wrote."
    )


class MetadataUnpickler(pickle.Unpickler):
    """Unpickles only the classes in `SHARDED_METADATA` and torch's dtypes."""

    def find_class(self, module: str, name: str) -> Any:
        dtype = module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        if dtype or name in SHARDED_METADATA.get(module, ()):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not checkpoint metadata")


def _load_plain_entry(folder: Path, info: Any) -> None:
    """One non-tensor entry (an optimizer's learning rate, a step count), read with `weights_only=True`."""
    if Path(info.relative_path).name != info.relative_path or info.transform_descriptors:
        raise ValueError(f"entry stored as {info.relative_path!r} with {info.transform_descriptors}")
    with open(folder / info.relative_path, "rb") as file:
        file.seek(info.offset)
        data = file.read(info.length)
    torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _disagree(path: str, name: str, saved: Any, given: Any) -> None:
    """A checkpoint trained from another model than the one given: one line, unless its model is a folder that is
    not on this machine (a run trained elsewhere, or a folder moved since), which leaves only the given one."""
    if isinstance(saved, str) and os.path.isabs(saved) and not os.path.exists(saved):
        say(f"--ckpt_path {path!r} was trained from {name}={saved!r}, not on this machine; {given!r} is used.")
        return
    raise LitHFError(
        f"--ckpt_path {path!r} was trained from {name}={saved!r}, but --model.{name} is {given!r}; a checkpoint never "
        f"chooses the model, --model.{name} does: give --model.{name}={saved}, or a checkpoint of {given!r}."
    )


def _get(options: Any, dotted: str) -> Any:
    """`options["a"]["b"]` for "a.b" (a dict, or jsonargparse's Namespace), None where absent."""
    for key in dotted.split("."):
        if options is None or key not in options:
            return None
        options = options[key]
    return options


def _drop(options: dict[str, Any], dotted: str) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        if not isinstance(options.get(key), dict):
            return
        options[key] = options = dict(options[key])  # a copy: the checkpoint's own dict stays as read
    options.pop(last, None)
