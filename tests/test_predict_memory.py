"""Prediction outputs stream to disk: peak memory of `predict` does not grow with the number of examples."""

import json
import os
import subprocess
import sys
from pathlib import Path

from runs import family_args

REPO = Path(__file__).resolve().parents[1]

# Runs the CLI and reports the process's peak resident memory (Linux: KiB) on its last line.
PEAK_RSS = (
    "import resource, sys\n"
    "from lit_hf.cli import main\n"
    "main(sys.argv[1:])\n"
    "print('peak_rss_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
)


def predict_peak_rss(tmp_path: Path, model_dir: Path, rows: int) -> tuple[int, Path]:
    path = tmp_path / f"rows-{rows}.csv"
    with path.open("w") as out:
        out.write("text\n")
        out.writelines(f"review number {i} was {'good' if i % 3 else 'bad'}\n" for i in range(rows))
    args = [
        "predict",
        *family_args("text_classification", model_dir),
        f"--data.predict_file={path}",
        "--data.text_column=text",
        "--data.eval_batch_size=500",
        f"--data.data_cache_dir={tmp_path / 'cache'}",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path / str(rows)}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    peak = int(done.stdout.strip().splitlines()[-1].split()[-1])
    (out,) = (tmp_path / str(rows)).rglob("predict_results.jsonl")
    return peak, out


def test_peak_memory_of_predict_does_not_grow_with_rows(tmp_path, classifier_dir):
    model_dir = classifier_dir("bert", 2)
    small, _ = predict_peak_rss(tmp_path, model_dir, 5_000)
    large, out = predict_peak_rss(tmp_path, model_dir, 50_000)
    print(f"peak RSS: 5,000 rows {small / 1024:.1f} MiB, 50,000 rows {large / 1024:.1f} MiB ({large / small:.3f}x)")
    with out.open() as lines:
        indices = [json.loads(line)["index"] for line in lines]
    assert indices == list(range(50_000))  # complete and in order
    assert large <= small * 1.10
    # The 10% bound alone also held for the in-memory all_gather_object path this replaced (6897dda: +32 MiB,
    # 1.056x); streamed, the growth measured +12 MiB (1.022x), all of it outside the prediction rows.
    assert large - small < 24 * 1024
