"""Independent computations the tests hold lit_hf against: plain Python and a plain `transformers` forward."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoModelForCausalLM

REPO = Path(__file__).resolve().parents[1]
HELD_OUT_LINES = 40  # wiki_00's last lines (2,176 GPT-2 tokens), which conftest's trained_gpt2_dir never sees


def wiki_00_held_out(data_dir: Path) -> str:
    """The text the trained GPT-2 of conftest's `trained_gpt2_dir` was not trained on."""
    lines = (data_dir / "wikitext" / "wiki_00").read_text(encoding="utf-8").splitlines(keepends=True)
    return "".join(lines[-HELD_OUT_LINES:])


def reference_tokens(path: Path, tokenizer) -> list[int]:
    """Every line (with its line break) tokenized, all concatenated: a split's token stream."""
    ids: list[int] = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        ids.extend(tokenizer(line)["input_ids"])
    return ids


def reference_blocks(path: Path, tokenizer, block_size: int) -> np.ndarray:
    """Every line (with its line break) tokenized, all concatenated, cut into blocks, the remainder dropped."""
    ids = reference_tokens(path, tokenizer)
    n = len(ids) // block_size
    return np.array(ids[: n * block_size]).reshape(n, block_size)


@torch.no_grad()
def reference_perplexity(model_dir: Path, blocks: np.ndarray) -> dict[str, float]:
    """Sum of -log p(next token) in float64 over every block, one block at a time."""
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    nll, correct, count = 0.0, 0, 0
    for block in torch.from_numpy(blocks).long():
        logits = model(input_ids=block[None]).logits[0, :-1].double()
        logp = logits.log_softmax(-1).gather(-1, block[1:, None])
        nll -= logp.sum().item()
        correct += (logits.argmax(-1) == block[1:]).sum().item()
        count += len(block) - 1
    return {"loss": nll / count, "ppl": math.exp(nll / count), "accuracy": correct / count}


@torch.no_grad()
def reference_strided(model_dir: Path, ids: list[int], block_size: int, stride: int) -> dict[str, float]:
    """The loop of the Hugging Face guide "Perplexity of fixed-length models", one window at a time, with the
    log-likelihoods summed in float64: windows start every `stride` tokens, each masks the labels an earlier window
    scored (`trg_len`), the last one ends at the stream's end."""
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    nll, correct, count, prev_end = 0.0, 0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + block_size, len(ids))
        trg_len = end - prev_end  # may be different from stride on the last window
        input_ids = torch.tensor(ids[begin:end])[None]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        logits, targets = model(input_ids=input_ids).logits[0, :-1].double(), target_ids[0, 1:]  # the model's shift
        keep = targets != -100
        nll -= logits[keep].log_softmax(-1).gather(-1, targets[keep][:, None]).sum().item()
        correct += int((logits[keep].argmax(-1) == targets[keep]).sum())
        count += int(keep.sum())
        prev_end = end
        if end == len(ids):
            break
    return {"loss": nll / count, "ppl": math.exp(nll / count), "accuracy": correct / count, "scored_tokens": count}


def read_results(root: Path) -> dict[str, float]:
    """The one results.json written under `root`."""
    (path,) = root.rglob("results.json")
    return json.loads(path.read_text())


def run_lit_hf(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m lit_hf ARGS` in a fresh process, as multi-process runs need (Lightning starts the other ranks by
    re-running the command line); one thread per process, so N ranks do not oversubscribe the CPU."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "lit_hf", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def logged_values(root: Path, tag: str) -> dict[int, list[float]]:
    """step -> every value of `tag` logged at that step, over all the TensorBoard runs under `root` (a resumed fit logs
    to a new version; a step done again after a resume is logged again)."""
    values: dict[int, list[float]] = {}
    for run in sorted({p.parent for p in root.rglob("events.out.tfevents.*")}):
        events = EventAccumulator(str(run))
        events.Reload()
        for event in events.Scalars(tag) if tag in events.Tags()["scalars"] else []:
            values.setdefault(event.step, []).append(event.value)
    return values


def logged(root: Path, tag: str) -> dict[int, float]:
    """step -> value of `tag` over all the TensorBoard runs under `root`, each step logged once."""
    values = logged_values(root, tag)
    assert all(len(v) == 1 for v in values.values()), f"{tag} logged twice at a step: {values}"
    return {step: v[0] for step, v in values.items()}
