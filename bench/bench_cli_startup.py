"""The command line's start-up: a command's first `--help` printed from lit_hf/cli/help/'s shipped copy against the
same help built live (`LIT_HF_NO_HELP_CACHE=1`: LightningCLI's parser, which imports Lightning), with the floor of a
live build (`import lightning.pytorch`) and the commands that never import Lightning.

Each run is a fresh process with an empty `$XDG_CACHE_HOME` (a fresh clone's first `--help`), `COLUMNS=100` and
`OMP_NUM_THREADS=1`; the shipped copy is printed only where this machine's Python and packages are those it was
made for (lit_hf/cli/help/stamp.json; the script says when not). Wall and CPU (user + system) seconds, medians
over the rounds; both ways run in each round, and the load average is printed with each round.

    python bench/bench_cli_startup.py [--repeats 3]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "fit --help": ["-m", "lit_hf", "fit", "--help"],
    "validate --help": ["-m", "lit_hf", "validate", "--help"],
    "export --help": ["-m", "lit_hf", "export", "--help"],
    "download --help": ["-m", "lit_hf", "download", "--help"],
    "python -m lit_hf": ["-m", "lit_hf"],
    "import lit_hf": ["-c", "import lit_hf"],
}
LIVE = ("fit --help", "validate --help", "export --help")  # the ones a live build would import Lightning for
FLOOR = {"import lightning.pytorch": ["-c", "import lightning.pytorch"], "import torch": ["-c", "import torch"]}


def timed(args: list[str], live: bool = False) -> tuple[float, float]:
    """(wall, CPU) seconds of `python ARGS` in a fresh process with an empty cache."""
    env = {key: value for key, value in os.environ.items() if key != "LIT_HF_NO_HELP_CACHE"}
    env.update(COLUMNS="100", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", XDG_CACHE_HOME=tempfile.mkdtemp())
    if live:
        env["LIT_HF_NO_HELP_CACHE"] = "1"
    before, start = os.times(), time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall, after = time.perf_counter() - start, os.times()
    return wall, after.children_user - before.children_user + after.children_system - before.children_system


def one_round(results: dict[str, list[tuple[float, float]]]) -> None:
    for name, args in COMMANDS.items():
        results.setdefault(name, []).append(timed(args))
        if name in LIVE:
            results.setdefault(f"{name}, live", []).append(timed(args, live=True))
    for name, args in FLOOR.items():
        results.setdefault(name, []).append(timed(args))


def shipped_applies() -> bool:
    os.environ["COLUMNS"] = "100"
    from lit_hf.cli import help_cache

    return help_cache.shipped_help("fit", help_cache.stamp(help_cache.shipped_packages())) is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="Rounds; medians are reported.")
    args = parser.parse_args()
    if not shipped_applies():
        print("the shipped help was made for other versions or sources: every --help here is built live")
    results: dict[str, list[tuple[float, float]]] = {}
    for index in range(args.repeats):
        one_round(results)
        print(f"round {index + 1}: load average {' '.join(f'{load:.2f}' for load in os.getloadavg())}", flush=True)
    for name, runs in results.items():
        wall, cpu = statistics.median(run[0] for run in runs), statistics.median(run[1] for run in runs)
        print(f"{name:28} wall {wall:6.2f} s  CPU {cpu:6.2f} s")
    for name in LIVE:
        shipped, live = (statistics.median(run[0] for run in results[key]) for key in (name, f"{name}, live"))
        print(f"{name}: live / shipped {live / shipped:.1f}x")


if __name__ == "__main__":
    main()
