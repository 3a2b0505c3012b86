"""`python -m lit_hf COMMAND ...`: every subcommand dispatched from here, and a user's mistake in any of them ends in
one `lit_hf: error:` line with exit status 2. Each command's module is imported when it runs, so `download` and the
top-level `--help` start without torch or Lightning (0.4 s instead of 5)."""

import sys

from lit_hf.cli.help import COMMANDS, COPIED_HELP
from lit_hf.console import quiet
from lit_hf.errors import LitHFError, user_error

# How gloo says that another process of the run went away (its socket closed) while this one waited in a collective.
PEER_LOST = ("Connection closed by peer", "Connection reset by peer")


def main(args: list[str] | None = None) -> None:
    """Entry point of `lit-hf` and `python -m lit_hf`; `args` defaults to the command line."""
    argv = sys.argv[1:] if args is None else args
    if argv in ([], ["-h"], ["--help"]):
        from lit_hf.cli.help import top_help

        print(top_help(), end="")
        if not argv:  # a bare `python -m lit_hf`: the commands, then what was missing (argparse exits 2 too)
            print("lit_hf: error: give a command, e.g. python -m lit_hf fit --config CFG", file=sys.stderr)
        sys.exit(2 if not argv else 0)  # as argparse's --help does
    quiet()  # before Lightning and transformers are imported
    try:
        run(argv[0], argv[1:], args)
    except Exception as err:
        cause = user_error(err)
        rank = process_rank()
        if cause is None and rank != 0 and peer_lost(err):
            sys.exit(1)  # another process ended first (a user error, a crash, a kill): its output says why
        if cause is None:
            raise
        if rank == 0:  # every process meets the same mistake; one says so
            print(f"lit_hf: error: {cause}", file=sys.stderr)
        sys.exit(2)


def run(command: str, rest: list[str], args: list[str] | None) -> None:
    """One command: lit_hf's own (`download`, `export`, `lm-eval`) by name, else LightningCLI's (`fit`, `validate`,
    `test`, `predict`, and its parse errors for anything else). `args` is None when the command line is sys.argv."""
    if rest in (["--help"], ["-h"]) and command in COPIED_HELP:  # printed from a copy made by the live parser
        from lit_hf.cli.help_cache import print_help

        print_help(command, lambda: export_help(rest) if command == "export" else lightning(args))
    elif command == "download":  # a hub command: argparse, no model
        from lit_hf.cli.download import download_main

        download_main(rest)
    elif command == "export":  # no Trainer: builds the task and writes a Hugging Face folder
        from lit_hf.cli.export import export_main

        export_main(rest)
    elif command == "lm-eval":  # no Trainer loop: lm-evaluation-harness on the task's model
        from lit_hf.harness import lm_eval_main

        lm_eval_main(rest)
    elif not command.startswith("-") and command not in COMMANDS:  # before the 5 s it takes to import Lightning
        raise LitHFError(f"{command!r} is no command; give one of {', '.join(COMMANDS)} (python -m lit_hf --help).")
    else:
        lightning(args)
        close_process_group()


def export_help(rest: list[str]) -> None:
    from lit_hf.cli.export import export_main

    export_main(rest)


def lightning(args: list[str] | None) -> None:
    from lit_hf.cli.lightning import run_lightning

    run_lightning(args)


def process_rank() -> int:
    """This process's global rank as Lightning knows it (0 where Lightning was never imported: one process)."""
    rank_zero = sys.modules.get("lightning.pytorch.utilities.rank_zero")
    return getattr(rank_zero.rank_zero_only, "rank", 0) if rank_zero is not None else 0


def close_process_group() -> None:
    """After a command that succeeded, the process group is destroyed while everything is still alive, as torch's
    documentation asks of every process; left to interpreter shutdown, a 2-process gloo fit once ended both ranks
    with "terminate called without an active exception" (exit status 134) after finishing its work. Not after a
    failure: ranks still inside a collective would wait for the failed one forever."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def peer_lost(err: BaseException) -> bool:
    """Whether `err` (or its cause) is a collective that failed because another process went away."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, RuntimeError) and any(text in str(seen) for text in PEER_LOST):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
