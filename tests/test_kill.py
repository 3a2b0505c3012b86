"""kill -9 at any moment: a `fit` of configs/quickstart_clm.yaml killed while caching, while writing a checkpoint and
while exporting leaves only complete files under their real names, and each rerun (`--ckpt_path=last`) goes on from
them. A complete export (model.safetensors) is checked in test_errors.py; fits killed between steps and resumed, to
the last bit, in test_resume.py."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from runs import run_dir

REPO = Path(__file__).resolve().parents[1]

# The child: patch one function to write a marker and stall at a chosen point, then run the real CLI. Product code
# has no test hooks; the test kills the child once the marker appears.
CHILD = r"""
import io, sys, time, pathlib
marker, point, args = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3:]

def stall():
    marker.write_text(point)
    time.sleep(600)

if point == "cache":  # the processed split is on disk, its key file not yet: the cache is cut short
    import datasets
    real_save_to_disk = datasets.Dataset.save_to_disk
    def save_to_disk(self, path, *a, **k):
        real_save_to_disk(self, path, *a, **k)
        stall()
    datasets.Dataset.save_to_disk = save_to_disk
elif point == "checkpoint":  # the 2nd checkpoint write (step 4; last.ckpt is a link) stops half-way through its bytes
    import torch
    real_save, calls = torch.save, []
    def save(obj, f, *a, **k):
        if ".ckpt.tmp-" in str(getattr(f, "name", "")):
            calls.append(1)
            if len(calls) == 2:
                buffer = io.BytesIO()
                real_save(obj, buffer, *a, **k)
                f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                f.flush()
                stall()
        return real_save(obj, f, *a, **k)
    torch.save = save
elif point == "export":  # the weights are saved, the tokenizer not yet
    import transformers
    real_save_pretrained = transformers.PreTrainedModel.save_pretrained
    def save_pretrained(self, *a, **k):
        real_save_pretrained(self, *a, **k)
        stall()
    transformers.PreTrainedModel.save_pretrained = save_pretrained

from lit_hf.cli import main
main(args)
"""


def fit_args(root: Path) -> list[str]:
    """configs/quickstart_clm.yaml as shipped (max_epochs set), shrunk to 4 epochs of 2 steps, a checkpoint every 2
    steps (the config's own ModelCheckpoint: `epoch=E-step=S.ckpt`, and last.ckpt a link to the newest) in one folder
    for every rerun."""
    return [
        "fit",
        f"--config={REPO / 'configs' / 'quickstart_clm.yaml'}",
        f"--data.data_cache_dir={root / 'cache'}",
        "--data.max_train_samples=32",  # 2 batches of 16 an epoch
        "--data.max_eval_samples=16",
        "--trainer.max_epochs=4",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={root / 'runs'}",
        f"--trainer.callbacks.init_args.dirpath={root / 'checkpoints'}",
        "--trainer.callbacks.init_args.every_n_train_steps=2",
    ]


def run_child(root: Path, point: str, args: list[str]) -> str:
    """Runs the CLI in a child; with a kill point, SIGKILLs it once it stalls there. Returns its output."""
    marker = root / f"at-{point}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    log = open(root / f"{point}.log", "w+")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(marker), point, *args], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 300
    while child.poll() is None and not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if marker.exists():
        child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    log.seek(0)
    output = log.read()
    assert (child.returncode == -signal.SIGKILL) if point != "none" else (child.returncode == 0), output[-3000:]
    return output


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]


@pytest.mark.slow
def test_kill_at_each_point_then_rerun(tmp_path) -> None:
    args = fit_args(tmp_path)
    checkpoints, cache = tmp_path / "checkpoints", tmp_path / "cache" / "lit_hf"

    run_child(tmp_path, "cache", args)
    assert leftovers(cache) and not [p for p in cache.iterdir() if ".tmp-" not in p.name]  # nothing looks cached

    run_child(tmp_path, "checkpoint", [*args, "--ckpt_path=last"])  # rebuilds the cache, trains, killed at step 4
    assert not leftovers(cache) and len(list(cache.glob("*/lit_hf_key.json"))) == 2
    assert leftovers(checkpoints)  # the half-written step-4 checkpoint, under its temporary name
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 2  # links the previous one, whole

    out = run_child(tmp_path, "export", [*args, "--ckpt_path=last"])  # resumes at step 2, reaches 8, killed exporting
    assert f"Restoring states from the checkpoint path at {checkpoints / 'last.ckpt'}" in out
    assert not leftovers(checkpoints)  # the killed run's half checkpoint went with the next save
    run = run_dir(tmp_path / "runs")
    assert not (run / "huggingface").exists()  # the export cut short is not there under its real name
    assert [p.name.split(".tmp-")[0] for p in leftovers(run)] == ["huggingface"]
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 8
