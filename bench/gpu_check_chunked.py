"""`--model.chunked_loss` on one GPU in bf16: a training step of transformers' loss against lit_hf's chunked loss.

    python bench/gpu_check_chunked.py [--steps 20] [--warmup 5]      # CUDA: GPT-2 (124M) and a BLOOM vocabulary
    python bench/gpu_check_chunked.py --tiny                         # the same code on the CPU, tiny sizes

Two models from configs: GPT-2 small (12 x 768, 50,257 tokens, batch 8 x 1,024) and a 4-layer, 1,024-wide GPT-2
with BLOOM's 250,880-token vocabulary (batch 4 x 1,024). Each step is forward, backward and fused AdamW under
`torch.autocast(bfloat16)` on fp32 weights (`--trainer.precision=bf16-mixed`); "plain" is `model(**batch,
labels=...).loss`, "chunked" is the path `CausalLMTask` takes with the option (`use_chunked_head` + `mean_nll`).
Prints per model and path: tokens/s after `--warmup` steps, peak allocated memory, MFU (the plain step's FLOPs from
lightning's `measure_flops` on a meta-device copy, over the GPU's bf16 peak from `get_available_flops`; the same
FLOPs for both paths, so MFU compares as tokens/s does), the final loss of both paths, and the ratios.
"""

import argparse
import time

import torch
from lightning.fabric.utilities.throughput import get_available_flops, measure_flops
from transformers import GPT2Config, GPT2LMHeadModel

from lit_hf.chunked_nll import mean_nll, next_token_targets, use_chunked_head

MODELS = {  # name -> (config fields, batch, block); --tiny shrinks them
    "gpt2-124M": ({"n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257}, 8, 1024),
    "bloom-vocab": ({"n_embd": 1024, "n_layer": 4, "n_head": 16, "vocab_size": 250880}, 4, 1024),
}
TINY = {"n_embd": 32, "n_layer": 2, "n_head": 2}


def build(fields: dict, block: int, device: str) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(**fields, n_positions=block, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config).to(device)


def step_flops(fields: dict, batch: torch.Tensor) -> int:
    """FLOPs of one plain forward and backward (lightning's `measure_flops`, on the meta device)."""
    with torch.device("meta"):
        model = build(fields, batch.shape[1], "meta")
        ids = torch.zeros(batch.shape, dtype=torch.long)
    return measure_flops(model, lambda: model(input_ids=ids, labels=ids).loss, lambda loss: loss)


def run(fields: dict, batch: torch.Tensor, chunked: bool, args: argparse.Namespace) -> dict[str, float]:
    """Tokens/s, peak memory (GB) and the last loss of `args.steps` steps of one path."""
    model = build(fields, batch.shape[1], batch.device.type).train()
    if chunked:
        use_chunked_head(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=batch.device.type == "cuda")
    cuda = batch.device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    for step in range(args.steps):
        if step == args.warmup:
            sync(cuda)
            start = time.perf_counter()
        with torch.autocast(batch.device.type, dtype=torch.bfloat16):
            if chunked:
                loss = mean_nll(model, {"input_ids": batch}, next_token_targets(batch))
            else:
                loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync(cuda)
    seconds = (time.perf_counter() - start) / (args.steps - args.warmup)
    peak = torch.cuda.max_memory_allocated() / 1e9 if cuda else float("nan")
    return {"tokens_per_sec": batch.numel() / seconds, "sec_per_step": seconds, "peak_gb": peak, "loss": loss.item()}


def sync(cuda: bool) -> None:
    if cuda:  # kernels run asynchronously: wait for them before reading the clock
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="tiny models on the CPU: checks the script, not speed")
    args = parser.parse_args()
    if not 0 <= args.warmup < args.steps:
        parser.error("--warmup must be below --steps")
    device = "cpu" if args.tiny else "cuda"
    peak = None if args.tiny else get_available_flops(torch.device(device), "bf16-mixed")
    print(f"gpu_check: chunked loss on {torch.cuda.get_device_name(0) if not args.tiny else 'CPU (--tiny)'}")
    for name, (fields, size, block) in MODELS.items():
        fields, size, block = (fields | TINY, 2, 64) if args.tiny else (fields, size, block)
        torch.manual_seed(1)
        batch = torch.randint(0, fields["vocab_size"], (size, block), device=device)
        flops = step_flops(fields, batch)
        results = {path: run(fields, batch, path == "chunked", args) for path in ("plain", "chunked")}
        for path, r in results.items():
            mfu = f"{flops / r['sec_per_step'] / peak:.1%}" if peak else "n/a"
            print(f"gpu_check:   {name} {path:7}: {r['tokens_per_sec']:9.0f} tokens/s, peak {r['peak_gb']:.2f} GB, "
                  f"MFU {mfu}, final loss {r['loss']:.6f}")  # fmt: skip
        plain, chunked = results["plain"], results["chunked"]
        print(f"gpu_check:   {name}: chunked {chunked['tokens_per_sec'] / plain['tokens_per_sec']:.2f}x the plain "
              f"tokens/s, {chunked['peak_gb'] / plain['peak_gb']:.2f}x its peak memory, final loss "
              f"{chunked['loss'] / plain['loss'] - 1:+.1e} relative")  # fmt: skip


if __name__ == "__main__":
    main()
