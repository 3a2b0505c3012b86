"""The command line: `lit_hf.cli.main` dispatches every subcommand (lit_hf/cli/dispatch.py)."""

from lit_hf.cli.dispatch import main

__all__ = ["main"]
