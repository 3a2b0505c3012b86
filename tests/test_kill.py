"""kill -9 at any moment: a `fit` killed while caching, while writing a checkpoint, mid-step and while exporting
leaves only complete files under their real names, and each rerun (`--ckpt_path=last`) goes on from them.
A complete export (model.safetensors) is checked in test_errors.py."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

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
elif point == "checkpoint":  # the 4th checkpoint write (last.ckpt at step 4) stops half-way through its bytes
    import torch
    real_save, calls = torch.save, []
    def save(obj, f, *a, **k):
        if ".ckpt.tmp-" in str(getattr(f, "name", "")):
            calls.append(1)
            if len(calls) == 4:
                buffer = io.BytesIO()
                real_save(obj, buffer, *a, **k)
                f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                f.flush()
                stall()
        return real_save(obj, f, *a, **k)
    torch.save = save
elif point == "step":  # inside the forward of optimizer step 5
    from lit_hf.tasks.causal_lm import CausalLMTask
    real_step = CausalLMTask.training_step
    def training_step(self, batch, batch_idx):
        if self.global_step == 5:
            stall()
        return real_step(self, batch, batch_idx)
    CausalLMTask.training_step = training_step
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


def fit_args(root: Path, model_dir: Path, text: Path) -> list[str]:
    return [
        "fit",
        "--model=lit_hf.tasks.CausalLMTask",
        f"--model.model_name_or_path={model_dir}",
        "--data=lit_hf.data.LanguageModelingDataModule",
        f"--data.train_file={text}",
        f"--data.validation_file={text}",
        f"--data.data_cache_dir={root / 'cache'}",
        "--data.block_size=32",
        "--data.batch_size=2",
        "--data.max_train_samples=4",  # 2 steps an epoch, a checkpoint at each epoch's end
        "--data.max_eval_samples=2",
        "--trainer.accelerator=cpu",
        "--trainer.max_steps=8",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={root / 'runs'}",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        f"--trainer.callbacks.dirpath={root / 'checkpoints'}",  # one folder for every rerun, so `last` is found
        "--trainer.callbacks.save_last=true",
        "--trainer.callbacks.save_top_k=-1",
    ]


def run_child(root: Path, point: str, args: list[str]) -> str:
    """Runs the CLI in a child; with a kill point, SIGKILLs it once it stalls there. Returns its output."""
    marker = root / f"at-{point}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    log = open(root / f"{point}.log", "w+")  # noqa: SIM115 (read back after the child is gone)
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
def test_kill_at_each_point_then_rerun(tmp_path, data_dir, causal_lm_dir) -> None:  # noqa: ANN001
    text = tmp_path / "text.txt"
    text.write_text((data_dir / "wikitext" / "wiki_00").read_text(encoding="utf-8")[:4000])
    args = fit_args(tmp_path, causal_lm_dir(), text)
    checkpoints, cache = tmp_path / "checkpoints", tmp_path / "cache" / "lit_hf"

    run_child(tmp_path, "cache", args)
    assert leftovers(cache) and not [p for p in cache.iterdir() if ".tmp-" not in p.name]  # nothing looks cached

    run_child(tmp_path, "checkpoint", [*args, "--ckpt_path=last"])  # rebuilds the cache, trains, killed at step 4
    assert not leftovers(cache) and len(list(cache.glob("*/lit_hf_key.json"))) == 2
    assert leftovers(checkpoints)  # the half-written last.ckpt, under its temporary name
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 2  # the previous one, whole

    out = run_child(tmp_path, "step", [*args, "--ckpt_path=last"])
    assert f"Restoring states from the checkpoint path at {checkpoints / 'last.ckpt'}" in out
    assert not leftovers(checkpoints)  # the killed run's half checkpoint went with the next save
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 4

    run_child(tmp_path, "export", [*args, "--ckpt_path=last"])  # resumes at step 4, reaches 8, killed exporting
    run = max((tmp_path / "runs" / "lightning_logs").iterdir(), key=lambda p: int(p.name.split("_")[1]))
    assert not (run / "huggingface").exists()  # the export cut short is not there under its real name
    assert [p.name.split(".tmp-")[0] for p in leftovers(run)] == ["huggingface"]
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 8
