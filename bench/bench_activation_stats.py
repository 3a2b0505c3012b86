"""Activation statistics' overhead: `validate` with and without `lit_hf.ActivationStatistics` (block outputs only).

The quickstart GPT-2 (`configs/quickstart_clm.yaml`) and BERT (`configs/quickstart_classification.yaml`), 64 wide,
and the GPT-2 256 wide: the statistics cost grows with the width, the model's compute with its square. Each is built
twice from its config (with the callback and without) and validated alternately `--repeats` times after one warm-up
each; the median validate time of each and their ratio are printed, as wall time and as the process's CPU time (which
other processes on a loaded machine disturb less), with each model's size and the load average. The target is at most
1.10x (issue 21).

    python bench/bench_activation_stats.py [--repeats 5]
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from lit_hf.cli.lightning import LitHFCLI

REPO = Path(__file__).resolve().parents[1]
CLM, CLASSIFICATION = "configs/quickstart_clm.yaml", "configs/quickstart_classification.yaml"
CONFIGS = {  # name -> (config, extra options): the quickstart models (64 wide), and GPT-2 four times wider
    "GPT-2": (CLM, []),
    "BERT": (CLASSIFICATION, []),
    "GPT-2 x4": (CLM, ["--model.config_overrides=n_embd=256,n_head=4"]),
}


def build(config: str, extra: list[str], root: Path, with_stats: bool) -> LitHFCLI:
    """The config's task, data and trainer, as `python -m lit_hf validate --config CONFIG` builds them."""
    args = [
        f"--config={REPO / config}",
        f"--trainer.default_root_dir={root}",
        f"--data.data_cache_dir={root.parent / 'cache'}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        *extra,
    ]
    return LitHFCLI(args=args + ["--trainer.callbacks+=lit_hf.ActivationStatistics"] * with_stats, run=False)


def validate_seconds(cli: LitHFCLI) -> tuple[float, float]:
    """Wall and CPU seconds of one `validate`."""
    wall, cpu = time.perf_counter(), time.process_time()
    cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    return time.perf_counter() - wall, time.process_time() - cpu


def size(cli: LitHFCLI) -> str:
    model = cli.model.model
    config = model.config
    width = getattr(config, "n_embd", None) or config.hidden_size
    layers = getattr(config, "n_layer", None) or config.num_hidden_layers
    return f"{width} wide, {layers} layers, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters"


def measure(config: str, extra: list[str], work: Path, repeats: int) -> tuple[str, list[float]]:
    """The model's size and the median wall and CPU validate seconds without and with the callback, runs
    alternating so both see the same load."""
    plain, stats = build(config, extra, work / "plain", False), build(config, extra, work / "stats", True)
    validate_seconds(plain), validate_seconds(stats)  # warm-up: the data's cache, first-call costs
    times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for _ in range(repeats):
        for with_stats, cli in ((False, plain), (True, stats)):
            times[with_stats].append(validate_seconds(cli))
    medians = [statistics.median(t[kind] for t in times[with_stats]) for kind in (0, 1) for with_stats in (False, True)]
    return size(plain), medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    repeats = parser.parse_args().repeats
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as work:
        rows = {name: measure(*run, Path(work) / name.replace(" ", "_"), repeats) for name, run in CONFIGS.items()}
    print(f"validate, median of {repeats} (block outputs, 128 bins, 6-sigma outliers); load average {load:.2f} at the")
    print(f"start, {os.getloadavg()[0]:.2f} at the end, on {os.cpu_count()} CPUs; without -> with statistics:")
    for name, (described, (plain, stats, plain_cpu, stats_cpu)) in rows.items():
        print(f"  {name:8s} ({described})")
        print(f"    wall {plain:.3f} s -> {stats:.3f} s: {stats / plain:.3f}x")
        print(f"    CPU  {plain_cpu:.3f} s -> {stats_cpu:.3f} s: {stats_cpu / plain_cpu:.3f}x")


if __name__ == "__main__":
    main()
