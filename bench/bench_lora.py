"""LoRA against full fine-tuning of the same GPT-2 (~30M parameters): trainable parameters, peak RSS, step time.

    python bench/bench_lora.py [--steps 10] [--batch-size 4] [--block-size 128] [--repeats 2]

Each run is a fresh process (peak RSS only grows within one), built through `CausalLMTask` as `fit` builds it
(`--model.lora={}` or not) and trained with the task's own AdamW on wikitext blocks tokenized by the real GPT-2
tokenizer. The two kinds of run alternate, `--repeats` times each; step time is the median step of a run, the
fastest run kept; the ratios are printed last. CPU by default; `--device cuda` adds peak CUDA memory.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def build_model(path: Path) -> None:
    """A 6-layer, 384-wide GPT-2 (30M parameters, 19M of them the embeddings) with the real GPT-2 tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

    tokenizer = GPT2Tokenizer.from_pretrained(DATA / "tokenizers" / "gpt2")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=384, n_layer=6, n_head=6, n_positions=256)
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def train(mode: str, model_dir: str, steps: int, batch_size: int, block_size: int, device: str) -> dict:
    """One run in this process: the task as `fit` builds it, `steps` + 2 warm-up optimizer steps."""
    import torch

    from lit_hf.optim import adamw_with_schedule
    from lit_hf.options import LoraOptions, OptimOptions
    from lit_hf.tasks import CausalLMTask

    task = CausalLMTask(model_name_or_path=model_dir, lora=LoraOptions() if mode == "lora" else None).to(device)
    text = (DATA / "wikitext" / "wikitext-2" / "valid.txt").read_text(encoding="utf-8")
    ids = torch.tensor(task.tokenizer(text)["input_ids"][: (steps + 2) * batch_size * block_size])
    batches = ids.view(steps + 2, batch_size, block_size).to(device)  # (step, batch, block)
    optim = OptimOptions(learning_rate=1e-4, weight_decay=0.0, adam_epsilon=1e-8, lr_scheduler_type="constant")
    optimizer = adamw_with_schedule(task.model, optim, total_steps=steps + 2)["optimizer"]
    before, times = rss_mb(), []
    for batch in batches:
        start = time.perf_counter()
        task.model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    result = {
        "trainable": sum(p.numel() for p in task.model.parameters() if p.requires_grad),
        "total": sum(p.numel() for p in task.model.parameters()),
        "step_s": statistics.median(times[2:]),
        "rss_before_mb": before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
    }
    if device == "cuda":
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def run_child(mode: str, model_dir: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", mode, "--model-dir", str(model_dir)]
    for name in ("steps", "batch_size", "block_size", "device"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{mode} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(runs: dict[str, list[dict]]) -> None:
    best = {mode: min(results, key=lambda r: r["step_s"]) for mode, results in runs.items()}
    keys = ["trainable", "total", "step_s", "rss_before_mb", "peak_rss_mb"] + (
        ["peak_cuda_mb"] if "peak_cuda_mb" in best["full"] else []
    )
    print(f"{'':16}{'full':>14}{'lora':>14}{'lora/full':>12}")
    for key in keys:
        full, lora = best["full"][key], best["lora"][key]
        cells = [f"{v:>14,}" if isinstance(v, int) else f"{v:>14.4g}" for v in (full, lora)]
        print(f"{key:16}{''.join(cells)}{lora / full:>12.4f}")
    print("all step times (s):", {mode: [round(r["step_s"], 4) for r in results] for mode, results in runs.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", choices=["full", "lora"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(train(args.child, args.model_dir, args.steps, args.batch_size, args.block_size, args.device)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        build_model(Path(tmp))
        runs: dict[str, list[dict]] = {"full": [], "lora": []}
        for _ in range(args.repeats):
            for mode in runs:
                runs[mode].append(run_child(mode, Path(tmp), args))
        report(runs)


if __name__ == "__main__":
    main()
