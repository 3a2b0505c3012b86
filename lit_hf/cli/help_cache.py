"""`python -m lit_hf fit --help` (and validate, test, predict, export) without importing Lightning: the help is
LightningCLI's, and building it imports Lightning (about 6 s of CPU on a 2-core machine, most of it torchmetrics
importing scipy and transformers, a floor lit_hf cannot lower), so a command's help text is printed from a copy made
by the live parser under the same stamp. Two copies are looked for: the one shipped in lit_hf/cli/help/ (made by
`python -m lit_hf.cli.help_cache` under the versions CI installs, so a fresh first `--help` is fast), then the
user's cache, written by the first live `--help`. The stamp holds everything the text depends on: the Python and
package versions, the help's width (the terminal's, at most 80 columns), jsonargparse's environment settings and
the content of every lit_hf source file; a copy under another stamp is never printed. `LIT_HF_NO_HELP_CACHE=1`
always builds the help live."""

import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from contextlib import redirect_stdout
from importlib import metadata
from pathlib import Path

import lit_hf
from lit_hf.cli.help import COPIED_HELP

SHIPPED = Path(__file__).parent / "help"  # <command>.txt and the stamp.json they were made under
MAX_COLUMNS = 80  # lit_hf's help is wrapped at the terminal's width up to this (cli/lightning.py's HelpFormatter)
# The distributions whose classes, signatures, docstrings and formatting make the help text (it names classes of
# lightning, torch, torchao and lit_hf). Not every one the live build imports: a newer pandas (through datasets)
# would void the copy for nothing; tests/test_cli_help.py compares the copy with a live build wherever it matches.
PACKAGES = (
    "jsonargparse",
    "docstring_parser",
    "typeshed_client",
    "lightning",
    "lightning-utilities",
    "torch",
    "torchmetrics",
    "torchao",
    "transformers",
    "datasets",
    "peft",
)


def help_columns() -> int:
    """The width the help is wrapped at: the terminal's (argparse's `COLUMNS` or 80 when not a terminal), at most
    `MAX_COLUMNS`, so every wider terminal gets the shipped text."""
    return min(shutil.get_terminal_size().columns, MAX_COLUMNS)


def stamp(packages: Iterable[str]) -> dict:
    """What a help text depends on, with `packages` the distributions whose versions count."""
    return {
        "python": platform.python_version(),
        "columns": help_columns(),
        "environment": {name: value for name, value in os.environ.items() if name.startswith("JSONARGPARSE_")},
        "packages": {name: version(name) for name in sorted(packages)},
        "sources": source_hash(),
    }


def version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "absent"


def source_hash() -> str:
    """SHA-256 over every lit_hf source file's path and content (not its time: a fresh clone's files are new)."""
    digest = hashlib.sha256()
    root = Path(lit_hf.__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(f"{path.relative_to(root).as_posix()}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def print_help(command: str, build_help: Callable[[], None]) -> None:
    """Print `command`'s help from a copy made under the current stamp, or run `build_help()` (which prints it and
    exits 0, as argparse does) and keep what it printed in the user's cache; exit 0."""
    if os.environ.get("LIT_HF_NO_HELP_CACHE"):
        build_help()
        return
    current = stamp(PACKAGES)
    text = shipped_help(command, current) or cached_help(command, current)
    if text is not None:
        sys.stdout.write(text)
        sys.exit(0)
    out = io.StringIO()
    try:
        with redirect_stdout(out):
            build_help()
    except SystemExit as done:
        sys.stdout.write(out.getvalue())
        if done.code in (0, None):
            store(cache_dir() / f"{command}.json", {"stamp": current, "text": out.getvalue()})
        raise
    sys.stdout.write(out.getvalue())


def shipped_help(command: str, current: dict) -> str | None:
    try:
        if json.loads((SHIPPED / "stamp.json").read_text(encoding="utf-8")) == current:
            return (SHIPPED / f"{command}.txt").read_text(encoding="utf-8")
    except (OSError, ValueError):
        pass
    return None


def cached_help(command: str, current: dict) -> str | None:
    try:
        entry = json.loads((cache_dir() / f"{command}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return entry.get("text") if isinstance(entry, dict) and entry.get("stamp") == current else None


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/lit_hf/help (~/.cache/lit_hf/help)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "lit_hf" / "help"


def store(path: Path, entry: dict) -> None:
    """Written whole or not at all (a temporary file renamed); an unwritable cache only means no cache."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(entry), encoding="utf-8")
        partial.replace(path)
    except OSError:
        pass


def live_help(command: str) -> str:
    """`python -m lit_hf COMMAND --help` as the live parser prints it at `MAX_COLUMNS`, in a fresh process (the
    classes a process has imported are the subclasses the help lists)."""
    env = {**os.environ, "COLUMNS": str(MAX_COLUMNS), "LIT_HF_NO_HELP_CACHE": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "lit_hf", command, "--help"], env=env, capture_output=True, text=True, check=True
    )
    return run.stdout


def ship() -> None:
    """Write lit_hf/cli/help/: each command's live help, and the stamp it was made under (`python -m
    lit_hf.cli.help_cache`, after changing lit_hf or upgrading one of `PACKAGES`)."""
    SHIPPED.mkdir(exist_ok=True)
    for command in COPIED_HELP:
        (SHIPPED / f"{command}.txt").write_text(live_help(command), encoding="utf-8")
    os.environ["COLUMNS"] = str(MAX_COLUMNS)
    text = json.dumps(stamp(PACKAGES), indent=1, sort_keys=True)
    (SHIPPED / "stamp.json").write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    ship()
