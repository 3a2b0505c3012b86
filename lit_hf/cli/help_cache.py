"""`python -m lit_hf fit --help` (and validate/test/predict) printed from a cache after the first time: the help is
LightningCLI's, and building it imports Lightning (about 6 s of CPU on a 2-core machine, most of it torchmetrics
importing scipy and transformers), so the first `--help` of a command writes its text to the user's cache and the
next ones print it without importing torch. The cache key holds everything the text depends on: the command, the
terminal width, Python's and the packages' versions, and the size and time of every file of lit_hf, so an edited
or upgraded install never prints a stale help. `LIT_HF_NO_HELP_CACHE=1` turns it off."""

import hashlib
import io
import os
import shutil
import sys
from contextlib import redirect_stdout
from importlib import metadata
from pathlib import Path

import lit_hf

PACKAGES = ("torch", "lightning", "jsonargparse", "transformers", "datasets", "peft", "torchmetrics")
HELP_FLAGS = (["--help"], ["-h"])


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/lit_hf/help (~/.cache/lit_hf/help)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "lit_hf" / "help"


def cache_key(command: str) -> str:
    parts = [command, str(shutil.get_terminal_size().columns), sys.version]
    for package in PACKAGES:
        try:
            parts.append(f"{package}={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{package}=absent")
    source = Path(lit_hf.__file__).parent
    for path in sorted(source.rglob("*.py")):
        stat = path.stat()
        parts.append(f"{path.relative_to(source)}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def print_help(command: str, build_help) -> None:
    """Print `command`'s help from the cache, or run `build_help()` (which prints it and exits 0, as argparse
    does), keep what it printed, and exit 0."""
    if os.environ.get("LIT_HF_NO_HELP_CACHE"):
        build_help()
        return
    path = cache_dir() / f"{command}-{cache_key(command)}.txt"
    if path.is_file():
        sys.stdout.write(path.read_text(encoding="utf-8"))
        sys.exit(0)
    text = io.StringIO()
    try:
        with redirect_stdout(text):
            build_help()
    except SystemExit as done:
        sys.stdout.write(text.getvalue())
        if done.code in (0, None):
            store(path, text.getvalue())
        raise
    sys.stdout.write(text.getvalue())


def store(path: Path, text: str) -> None:
    """Written whole or not at all (a temporary file renamed); an unwritable cache only means no cache."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for old in path.parent.glob(f"{path.name.partition('-')[0]}-*.txt"):  # one entry per command
            old.unlink(missing_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
    except OSError:
        pass
