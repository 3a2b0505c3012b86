"""`python -m lit_hf --help`: every command listed, printed without importing torch or Lightning."""

import subprocess
import sys

from lightning.pytorch.cli import LightningCLI

from lit_hf.cli.help import COMMANDS


def test_top_help_lists_lightnings_subcommands_and_ours() -> None:
    assert list(COMMANDS)[:4] == list(LightningCLI.subcommands())
    assert list(COMMANDS)[4:] == ["export", "lm-eval", "download"]  # lit_hf/cli/dispatch.py dispatches them


def test_top_help_imports_neither_torch_nor_lightning() -> None:
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "lit_hf", "--help"], capture_output=True, text=True, check=True
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time")}
    assert "lit_hf.cli.help" in imported and not {"torch", "lightning", "transformers"} & imported
    assert all(f"  {name} " in run.stdout for name in COMMANDS)
