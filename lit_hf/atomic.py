"""Outputs written under a temporary name in their own folder, then renamed into place: a run killed at any moment
leaves the previous version or the new one, never half of one (a rename within one filesystem is atomic)."""

import contextlib
import errno
import os
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from lit_hf.checks import check_checkpoint_file, incomplete_message
from lit_hf.errors import LitHFError

# `<name>.tmp-<host>-<pid>` (and `.old-`, a folder moved aside): the host, so that on a filesystem shared by
# several machines only the machine that wrote a leftover judges whether its writer still runs.
LEFTOVER = re.compile(r".+\.(?:tmp|old)-(?P<host>.+)-(?P<pid>\d+)$")


def temporary_name(path: Path, kind: str = "tmp") -> Path:
    """`<name>.tmp-<host>-<pid>` beside `path`: the same filesystem, and a suffix no reader takes for the real
    thing (`--ckpt_path=last` only considers `last*.ckpt`; a cache or export is looked up by its exact name)."""
    return path.with_name(f"{path.name}.{kind}-{socket.gethostname()}-{os.getpid()}")


def remove_stale(folder: Path) -> None:
    """Removes the leftovers in `folder` of writers on this machine that no longer run (runs killed mid-write)."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        match = LEFTOVER.match(entry.name)
        if match and match["host"] == socket.gethostname() and not _running(int(match["pid"])):
            _remove(entry)


@contextlib.contextmanager
def replaced(path: Path) -> Iterator[Path]:
    """Yields a temporary path to write a file or folder to; on success it replaces `path` (an existing folder is
    moved aside first, since a folder cannot be renamed onto another), on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    _remove(tmp)
    try:
        yield tmp
        _put_in_place(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    remove_stale(path.parent)


def write_text(path: Path, text: str) -> None:
    with replaced(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


class AtomicCheckpointIO(TorchCheckpointIO):
    """`torch.save` to `<name>.tmp-<pid>` in the checkpoint's folder, then a rename (Lightning's own save writes
    through fsspec's transaction, whose temporary file lives in /tmp: on another filesystem the final move is a
    copy, and a kill during it leaves a truncated checkpoint). Loads with `weights_only=True` unless told otherwise,
    and says in one line when a checkpoint is missing or incomplete."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):  # remote storage: Lightning's own transaction
            return super().save_checkpoint(checkpoint, path, storage_options)
        try:
            with replaced(Path(path)) as tmp, open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())  # on disk before the rename makes it visible
        except (OSError, RuntimeError) as err:
            cause = os_error(err)
            if cause is None:
                raise
            raise LitHFError(write_failed(str(path), cause)) from err

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if "://" not in str(path):
            check_checkpoint_file(str(path))
        try:
            return super().load_checkpoint(path, map_location, True if weights_only is None else weights_only)
        except RuntimeError as err:
            raise LitHFError(incomplete_message(str(path), err)) from err


def _put_in_place(tmp: Path, path: Path) -> None:
    """Renames `tmp` to `path`; a folder there is moved aside first and comes back if the rename fails."""
    if not path.is_dir():
        os.replace(tmp, path)
        return
    old = temporary_name(path, "old")
    path.rename(old)
    try:
        tmp.rename(path)
    except BaseException:
        old.rename(path)
        raise
    _remove(old)


def os_error(err: BaseException) -> OSError | None:
    """The OSError behind `err`: torch's zip writer may report a failed write as `unexpected pos` (a RuntimeError)."""
    seen: BaseException | None = err
    while seen is not None and not isinstance(seen, OSError):
        seen = seen.__cause__ or seen.__context__
    return seen


def write_failed(path: str, err: OSError) -> str:
    """One line for a write that failed: its file, the system's reason, and the way out; the file is not there."""
    reason = err.strerror or str(err)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        way_out = "free space there or give another --trainer.default_root_dir"
    elif err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        way_out = "give a --trainer.default_root_dir you can write to"
    else:
        way_out = "check the folder and its disk"
    return f"Could not write {path} ({reason}); {way_out}. Nothing half-written was left, earlier files are kept."


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)
