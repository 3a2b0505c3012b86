"""Full precision against each built-in quantization method on the quickstart models: metric delta, validate time,
peak memory.

    python bench/bench_quantization.py [--families clm classification] [--fit-epochs 1] [--repeats 1]

For each family the bench first fits its quickstart config (`configs/quickstart_<family>.yaml`, CPU) for
`--fit-epochs` epochs in full precision, then validates that checkpoint once in full precision and once per
built-in method (`--model.quantization.method=...`; intx_weight_only at 4 bits, group size 32), each in a fresh
process (peak RSS only grows within one). Per run it prints the headline metric, its delta from full precision, the
wall time of the `Trainer.validate` call (data from the cache, quantizing, the loop; not the imports, the parsing
or the model's loading; the fastest of `--repeats`) and the process's peak RSS (for these tiny models mostly the
imported libraries); the time and memory ratios against full precision are the last columns.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METHODS = {
    "full precision": [],
    "int8_weight_only": ["--model.quantization.method=int8_weight_only"],
    "int8_dynamic_activation_int8_weight": ["--model.quantization.method=int8_dynamic_activation_int8_weight"],
    "intx_weight_only (4 bits, group 32)": [
        "--model.quantization.method=intx_weight_only",
        "--model.quantization.bits=4",
        "--model.quantization.group_size=32",
    ],
    "float8_weight_only": ["--model.quantization.method=float8_weight_only"],
}
HEADLINE = {  # family -> the metric compared (results.json key)
    "clm": "val/ppl",
    "classification": "val/accuracy",
    "translation": "val/bleu",
    "summarization": "val/rougeL",
    "multiple_choice": "val/accuracy",
    "image_classification": "val/accuracy",
}


def quickstart(family: str, root: Path) -> list[str]:
    config = REPO / "configs" / f"quickstart_{family}.yaml"
    return [f"--config={config}", f"--trainer.default_root_dir={root}", f"--data.data_cache_dir={root / 'cache'}"]


def run_child(argv: list[str]) -> dict:
    """`python -m lit_hf <argv>` in a fresh process: the seconds its `Trainer.validate` (or `fit`) call took (data
    setup from the cache, quantization, the loop; not the imports and the parsing) and the process's peak RSS."""
    code = (
        "import functools, json, resource, sys, time\n"
        "import lightning\n"
        "from lit_hf.cli import main\n"
        "seconds = []\n"
        "def timed(method):\n"
        "    @functools.wraps(method)  # LightningCLI reads the subcommand's options from its signature\n"
        "    def run(*args, **kwargs):\n"
        "        start = time.perf_counter()\n"
        "        out = method(*args, **kwargs)\n"
        "        seconds.append(time.perf_counter() - start)\n"
        "        return out\n"
        "    return run\n"
        "lightning.Trainer.validate = timed(lightning.Trainer.validate)\n"
        "lightning.Trainer.fit = timed(lightning.Trainer.fit)\n"
        "main(sys.argv[1:])\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "print('BENCH ' + json.dumps({'seconds': sum(seconds), 'peak_mb': peak}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        sys.exit(done.stderr[-3000:])
    line = next(line for line in done.stdout.splitlines() if line.startswith("BENCH "))
    return json.loads(line[len("BENCH ") :])


def bench_family(family: str, root: Path, args: argparse.Namespace) -> None:
    fit = [*quickstart(family, root / "fit"), f"--trainer.max_epochs={args.fit_epochs}", "--trainer.logger=false"]
    run_child(["fit", *fit, "--save_pretrained.enabled=false", f"--trainer.default_root_dir={root / 'fit'}"])
    (ckpt,) = sorted((root / "fit").rglob("last.ckpt")) or sorted((root / "fit").rglob("*.ckpt"))[-1:]
    rows = {}
    for name, options in METHODS.items():
        runs = []
        for repeat in range(args.repeats):
            out = root / f"{name.split()[0]}-{repeat}"
            runs.append(run_child(["validate", *quickstart(family, out), f"--ckpt_path={ckpt}", *options]))
            (results,) = out.rglob("results.json")
            runs[-1]["metric"] = json.loads(results.read_text())[HEADLINE[family]]
        rows[name] = min(runs, key=lambda r: r["seconds"])
    full = rows["full precision"]
    print(f"\n{family} ({HEADLINE[family]}, {args.fit_epochs} fit epoch(s), checkpoint {ckpt.name})")
    print(f"{'method':38} {'metric':>10} {'delta':>11} {'validate s':>10} {'peak MB':>8} {'time x':>7} {'mem x':>6}")
    for name, row in rows.items():
        delta = row["metric"] - full["metric"]
        time_x, mem_x = row["seconds"] / full["seconds"], row["peak_mb"] / full["peak_mb"]
        print(f"{name:38} {row['metric']:10.5f} {delta:+11.2e} {row['seconds']:10.2f} {row['peak_mb']:8.0f} "
              f"{time_x:7.2f} {mem_x:6.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=["clm", "classification"], choices=sorted(HEADLINE))
    parser.add_argument("--fit-epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    start = time.perf_counter()
    for family in args.families:
        with tempfile.TemporaryDirectory(prefix=f"bench-quant-{family}-") as root:
            bench_family(family, Path(root), args)
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else "?"
    print(f"\n{time.perf_counter() - start:.0f} s in all; load average {' '.join(load)}; "
          f"peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
