"""Causal-LM training throughput: lit_hf `fit` against `transformers.Trainer` (run_clm.py's setup) and a plain loop.

One GPT-2 built from a `GPT2Config` (default 6 layers, 512 wide, the real 50,257-token vocabulary) and saved once,
so all three start from the same weights; the GPT-2 tokenizer and WikiText-2 valid text from ../shared/data (or
$LIT_HF_TEST_DATA), its first 90% of lines for training and the rest for validation, in blocks of 128, batches
of 8, one epoch over the first `steps * 8` blocks, AdamW (fused where torch has it), linear decay, no warmup,
gradients clipped to norm 1 (the Trainer's default, so all three do it).

    python bench/bench_causal_lm.py [--steps 30] [--warmup 5] [--repeats 3] [--variants fp32 bf16-mixed compiled]

Variants: fp32; bf16-mixed (lit_hf `--trainer.precision=bf16-mixed`, Trainer `bf16=True`, the plain loop under
`torch.autocast("cpu", torch.bfloat16)`); compiled (bf16-mixed and torch.compile: lit_hf with `--lit-compile-flags`
(`--model.speed.compile=true`), Trainer `torch_compile=True`, the plain loop `torch.compile(model)`); checkpointed (fp32
with gradient checkpointing, non-reentrant: lit_hf `--model.speed.gradient_checkpointing=true`, Trainer
`gradient_checkpointing=True`, the plain loop `activation_checkpointing_enable`; not run unless named). Every side steps
`torch.optim.AdamW(fused=True)`. Each run is its own process (peak RSS is its own; a fresh inductor cache). Tokens/s
counts the steps after the first `--warmup`, timed at the end of each optimizer step by a callback on every side, so
start-up and compilation are left out; the first step's seconds are printed apart, and the compile seconds as the
compiled first step less the bf16-mixed one. The validation perplexity is over the first `--val-blocks` validation
blocks. Prints a table, the ratios of lit_hf to each peer (medians over repeats), the targets of issue 12 and, per
system, the compile seconds and gradient checkpointing's speed and peak RSS against fp32.

`lit_chunked` is lit_hf with `--model.chunked_loss=true` (issue 22), `lit_hf` without it; `--vocab-size 250880`
builds the model with BLOOM's vocabulary (token ids stay GPT-2's). `--validation` times `validate` over
`steps * batch` validation blocks instead (lit_hf with and without the chunked loss against a `torch.no_grad` loop
scoring full logits with lit_hf's exact float64 `NextTokenNLL`), batches stamped as they end.
"""

import argparse
import functools
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from transformers import TrainerCallback

REPO = Path(__file__).resolve().parents[1]
SYSTEMS = ("lit_hf", "lit_chunked", "trainer", "plain")
EVAL_SYSTEMS = ("lit_hf", "lit_chunked", "plain")  # --validation: lit_hf's `validate` against a no_grad loop
VARIANTS = ("fp32", "bf16-mixed", "compiled", "checkpointed")
MIXED = ("bf16-mixed", "compiled")  # the variants under bf16 autocast
SHARED = ("steps", "warmup", "batch", "block", "n_embd", "n_layer", "n_head", "learning_rate", "max_grad_norm")
SHARED += ("val_blocks", "threads", "lit_compile_flags", "vocab_size", "validation")
STEP_ENDS: list[float] = []  # perf_counter() at the end of every optimizer step (--validation: batch) of this process


def make_inputs(work: Path, args: argparse.Namespace) -> None:
    """train.txt / val.txt (90/10 by lines) and a saved random GPT-2 with the tokenizer, in `work`."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

    data_dir = Path(os.environ.get("LIT_HF_TEST_DATA", REPO.parent / "shared" / "data"))
    lines = (data_dir / "wikitext/wikitext-2/valid.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    cut = len(lines) * 9 // 10
    (work / "train.txt").write_text("".join(lines[:cut]), encoding="utf-8")
    (work / "val.txt").write_text("".join(lines[cut:]), encoding="utf-8")
    tokenizer = GPT2Tokenizer.from_pretrained(data_dir / "tokenizers/gpt2")  # vocab.json + merges.txt
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=args.vocab_size or len(tokenizer), n_positions=args.block, n_embd=args.n_embd,
        n_layer=args.n_layer, n_head=args.n_head, resid_pdrop=args.dropout, embd_pdrop=args.dropout,
        attn_pdrop=args.dropout,
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    model.save_pretrained(work / "model")
    tokenizer.save_pretrained(work / "model")
    size = f"{args.n_layer} layers x {args.n_embd}, {config.vocab_size:,} tokens"
    print(f"model: GPT-2, {size}, {model.num_parameters() / 1e6:.1f}M parameters")


class LightningClock(L.Callback):
    """Stamps the end of every training batch: Lightning calls this after the optimizer step."""

    def on_train_batch_end(self, *args, **kwargs) -> None:
        STEP_ENDS.append(time.perf_counter())

    def on_validation_batch_end(self, trainer: L.Trainer, *args, **kwargs) -> None:
        if trainer.state.fn == "validate":  # fit's validation is not timed
            STEP_ENDS.append(time.perf_counter())


class TrainerClock(TrainerCallback):
    """Stamps the end of every optimizer step of a `transformers.Trainer` (after the scheduler step)."""

    def on_step_end(self, args, state, control, **kwargs):
        STEP_ENDS.append(time.perf_counter())


def run_lit_hf(work: Path, args: argparse.Namespace, variant: str, out: Path, chunked: bool = False) -> float:
    """lit_hf through its CLI in this process (`fit`, or with --validation `validate`), with the chunked loss or
    without; the validation perplexity after the last step."""
    from lit_hf.cli import main

    main(
        [
            "validate" if args.validation else "fit", "--model=lit_hf.tasks.CausalLMTask",
            f"--model.model_name_or_path={work / 'model'}", f"--model.chunked_loss={str(chunked).lower()}",
            f"--model.optim.learning_rate={args.learning_rate}", "--data=lit_hf.data.LanguageModelingDataModule",
            f"--data.train_file={work / 'train.txt'}", f"--data.validation_file={work / 'val.txt'}",
            f"--data.block_size={args.block}", f"--data.batch_size={args.batch}",
            f"--data.max_train_samples={args.steps * args.batch}",
            f"--data.max_eval_samples={args.steps * args.batch if args.validation else args.val_blocks}",
            f"--data.eval_batch_size={args.batch}",
            f"--data.data_cache_dir={out / 'cache'}", "--trainer.accelerator=cpu", "--trainer.devices=1",
            "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={out}", "--seed_everything=42",
            *([] if args.validation else ["--trainer.max_epochs=1", "--trainer.num_sanity_val_steps=0",
                                          "--trainer.enable_checkpointing=false",
                                          f"--trainer.gradient_clip_val={args.max_grad_norm}"]),
            "--trainer.callbacks+=__main__.LightningClock",  # this script, run as the worker
            *(["--trainer.precision=bf16-mixed"] if variant in MIXED else []),
            *(args.lit_compile_flags.split() if variant == "compiled" else []),
            *(["--model.speed.gradient_checkpointing=true"] if variant == "checkpointed" else []),
        ]
    )  # fmt: skip
    (results,) = out.rglob("results.json")
    return json.loads(results.read_text())["val/ppl"]


def run_trainer(work: Path, args: argparse.Namespace, variant: str, out: Path) -> float:
    """run_clm.py's pipeline: load_dataset("text"), map(tokenize), map(group_texts), Trainer; its perplexity."""
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments, default_data_collator

    tokenizer = AutoTokenizer.from_pretrained(work / "model")
    files = {"train": str(work / "train.txt"), "validation": str(work / "val.txt")}
    raw = load_dataset("text", data_files=files, keep_linebreaks=True, cache_dir=str(out / "hf"))
    tokenized = raw.map(lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"])
    data = tokenized.map(lambda b: group_texts(b, args.block), batched=True)
    model = AutoModelForCausalLM.from_pretrained(work / "model")
    training_args = TrainingArguments(
        output_dir=str(out / "trainer"), per_device_train_batch_size=args.batch,
        per_device_eval_batch_size=args.batch, learning_rate=args.learning_rate, num_train_epochs=1,
        lr_scheduler_type="linear", max_grad_norm=args.max_grad_norm, seed=42, save_strategy="no",
        eval_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, bf16=variant in MIXED,
        torch_compile=variant == "compiled", optim="adamw_torch_fused",
        gradient_checkpointing=variant == "checkpointed", gradient_checkpointing_kwargs={"use_reentrant": False},
    )  # fmt: skip
    trainer = Trainer(
        model=model, args=training_args, train_dataset=data["train"].select(range(args.steps * args.batch)),
        eval_dataset=data["validation"].select(range(args.val_blocks)), data_collator=default_data_collator,
        callbacks=[TrainerClock()],
    )  # fmt: skip
    trainer.train()
    return math.exp(trainer.evaluate()["eval_loss"])  # as run_clm.py reports it


def group_texts(examples: dict[str, list], block_size: int) -> dict[str, list]:
    """run_clm.py's: concatenate the rows of a map batch, cut into blocks, drop the batch's remainder."""
    concatenated = {k: sum(examples[k], []) for k in examples}
    total = len(concatenated["input_ids"]) // block_size * block_size
    result = {k: [t[i : i + block_size] for i in range(0, total, block_size)] for k, t in concatenated.items()}
    result["labels"] = result["input_ids"].copy()
    return result


def blocks_of(path: Path, tokenizer, block_size: int) -> torch.Tensor:
    """Every line (with its line break) tokenized, all concatenated and cut into blocks: (n, block_size)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    ids = [i for row in tokenizer(lines)["input_ids"] for i in row]
    n = len(ids) // block_size
    return torch.tensor(ids[: n * block_size]).view(n, block_size)


def run_plain(work: Path, args: argparse.Namespace, variant: str, out: Path) -> float:
    """A hand-written loop: shuffled blocks, the HF loss, fused AdamW, linear decay; its validation perplexity."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler

    if args.validation:
        return plain_validation(work, args, variant)
    tokenizer = AutoTokenizer.from_pretrained(work / "model")
    train = blocks_of(work / "train.txt", tokenizer, args.block)[: args.steps * args.batch]
    val = blocks_of(work / "val.txt", tokenizer, args.block)[: args.val_blocks]
    torch.manual_seed(42)
    model = AutoModelForCausalLM.from_pretrained(work / "model").train()
    if variant == "checkpointed":
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.0, fused=True)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=args.steps)
    step = torch.compile(model) if variant == "compiled" else model
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant in MIXED)
    for batch in train[torch.randperm(len(train))].split(args.batch):
        with autocast:
            loss = step(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        STEP_ENDS.append(time.perf_counter())
    model.eval()
    with torch.no_grad(), autocast:  # equal blocks: the mean of batch means is the mean over tokens
        losses = [model(input_ids=b, labels=b).loss.double() for b in val.split(args.batch)]
    return math.exp(sum(losses).item() / len(losses))


def plain_validation(work: Path, args: argparse.Namespace, variant: str) -> float:
    """`torch.no_grad` over the validation blocks: full logits, then lit_hf's exact float64 NLL of them
    (`NextTokenNLL`, the metric `validate` uses without the chunked loss); the perplexity."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lit_hf.metrics import NextTokenNLL

    tokenizer = AutoTokenizer.from_pretrained(work / "model")
    val = blocks_of(work / "val.txt", tokenizer, args.block)[: args.steps * args.batch]
    model, nll = AutoModelForCausalLM.from_pretrained(work / "model").eval(), NextTokenNLL()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant in MIXED)
    step = torch.compile(model) if variant == "compiled" else model
    with torch.no_grad(), autocast:
        for batch in val.split(args.batch):
            nll.update(step(input_ids=batch).logits, batch)
            STEP_ENDS.append(time.perf_counter())
    return nll.compute()["ppl"].item()


def worker(args: argparse.Namespace) -> None:
    """One system, one variant, in this process; prints one JSON line."""
    torch.set_num_threads(args.threads)
    work, out = Path(args.work), Path(args.work) / f"run-{args.worker}-{args.variant}-{os.getpid()}"
    chunked = functools.partial(run_lit_hf, chunked=True)
    run = {"lit_hf": run_lit_hf, "lit_chunked": chunked, "trainer": run_trainer, "plain": run_plain}[args.worker]
    start = time.perf_counter()
    ppl = run(work, args, args.variant, out)
    shutil.rmtree(out, ignore_errors=True)  # lit_hf's exported model and the caches: not needed, and large
    assert len(STEP_ENDS) == args.steps, f"{len(STEP_ENDS)} steps timed, {args.steps} expected"
    timed = STEP_ENDS[-1] - STEP_ENDS[args.warmup - 1]
    report = {
        "tokens_per_sec": (args.steps - args.warmup) * args.batch * args.block / timed,
        "sec_per_step": timed / (args.steps - args.warmup),
        "first_step_sec": STEP_ENDS[0] - start,  # includes loading and, when compiled, compilation
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "val_ppl": ppl,
    }
    print("RESULT " + json.dumps(report), flush=True)


def launch(system: str, variant: str, work: Path, args: argparse.Namespace) -> dict:
    """A fresh process for one run; its report (or the failure, shown)."""
    flags = [f"--{name.replace('_', '-')}={getattr(args, name)}" for name in SHARED if name != "validation"]
    flags += ["--validation"] if args.validation else []
    cmd = [sys.executable, __file__, f"--worker={system}", f"--variant={variant}", f"--work={work}", *flags]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    env |= {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    env["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(dir=work, prefix="inductor-")  # compile from nothing
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"{system} {variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of tokens/s")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of all runs; medians are printed")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS[:3]))
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, help="default: all (--validation: all but trainer)")
    parser.add_argument("--vocab-size", type=int, default=0, help="the model's vocabulary (0: the tokenizer's)")
    parser.add_argument("--validation", action="store_true", help="time `validate` over steps * batch blocks")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--block", type=int, default=128)
    parser.add_argument("--n-embd", type=int, default=512)
    parser.add_argument("--n-layer", type=int, default=6)
    parser.add_argument("--n-head", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--dropout", type=float, default=0.1, help="GPT-2's three dropouts (its default 0.1)")
    parser.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping (the Trainer's default)")
    parser.add_argument("--val-blocks", type=int, default=64, help="validation blocks for the perplexity")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads per run")
    parser.add_argument("--lit-compile-flags", default="--model.speed.compile=true", help="lit_hf's compile option(s)")
    parser.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 0 < args.warmup < args.steps:
        parser.error("--warmup must be at least 1 and below --steps")
    args.systems = args.systems or list(EVAL_SYSTEMS if args.validation else SYSTEMS)
    if args.validation and "trainer" in args.systems:
        parser.error("--validation times lit_hf and the plain loop, not the Trainer")
    return args


def run_all(work: Path, args: argparse.Namespace) -> dict[tuple[str, str], list[dict]]:
    """Every (variant, system) `repeats` times, round after round, the systems' order turning each round."""
    runs: dict[tuple[str, str], list[dict]] = {}
    for repeat in range(args.repeats):
        for variant in args.variants:
            systems = args.systems[repeat % len(args.systems) :] + args.systems[: repeat % len(args.systems)]
            for system in systems:
                report = launch(system, variant, work, args)
                print(f"  round {repeat + 1}: {variant:10} {system:11} {report}", flush=True)
                runs.setdefault((variant, system), []).append(report)
    return runs


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def ratio(runs: dict, a: tuple[str, str], b: tuple[str, str]) -> float | None:
    """Median over rounds of a's tokens/s over b's in the same round."""
    if a not in runs or b not in runs:
        return None
    return statistics.median(x["tokens_per_sec"] / y["tokens_per_sec"] for x, y in zip(runs[a], runs[b], strict=True))


def print_report(runs: dict, args: argparse.Namespace) -> None:
    print(
        f"\n{'variant':10} {'system':11} {'tokens/s':>9} {'s/step':>7} {'1st step s':>10} {'RSS GB':>7} {'val ppl':>9}"
    )
    for (variant, system), reports in runs.items():
        row = [median(reports, k) for k in ("tokens_per_sec", "sec_per_step", "first_step_sec", "peak_rss_gb")]
        print(f"{variant:10} {system:11} {row[0]:9.1f} {row[1]:7.3f} {row[2]:10.1f} {row[3]:7.2f} "
              f"{median(reports, 'val_ppl'):9.2f}")  # fmt: skip
    print("\nratios, lit_hf / peer (median over rounds of same-round ratios):")
    for variant in args.variants:
        for ours, peer in (("lit_hf", "trainer"), ("lit_hf", "plain"), ("lit_chunked", "plain")):
            for peer_variant in dict.fromkeys((variant, "fp32")):
                r = ratio(runs, (variant, ours), (peer_variant, peer))
                if r is not None:
                    print(f"  {ours} {variant} / {peer} {peer_variant}: {r:.2f}x")
    print("\ntargets (issue 22):")
    for line in chunked_targets(runs, args.validation):
        print("  " + line)
    print("\ntargets (issue 12):")
    for line in [] if args.validation else targets(runs):
        print("  " + line)
    print("\ncompilation and gradient checkpointing, per system:")
    for line in effects(runs, args.systems):
        print("  " + line)


def verdict(value: float | None, bound: float) -> str:
    return "n/a (not run)" if value is None else f"{'PASS' if value >= bound else 'MISS'} ({value:.2f}x)"


def targets(runs: dict) -> list[str]:
    lines = [
        f"fp32: lit_hf >= 1.0x Trainer fp32: {verdict(ratio(runs, ('fp32', 'lit_hf'), ('fp32', 'trainer')), 1.0)}",
        f"fp32: lit_hf >= 1.0x plain fp32: {verdict(ratio(runs, ('fp32', 'lit_hf'), ('fp32', 'plain')), 1.0)}",
        f"bf16-mixed: lit_hf >= 1.6x plain fp32: "
        f"{verdict(ratio(runs, ('bf16-mixed', 'lit_hf'), ('fp32', 'plain')), 1.6)}",
    ]
    if ("bf16-mixed", "lit_hf") in runs and ("fp32", "lit_hf") in runs:
        drift = median(runs[("bf16-mixed", "lit_hf")], "val_ppl") / median(runs[("fp32", "lit_hf")], "val_ppl") - 1
        lines.append(f"bf16-mixed: lit_hf perplexity within 1% of fp32: {'PASS' if abs(drift) <= 0.01 else 'MISS'} "
                     f"({100 * drift:+.2f}%)")  # fmt: skip
    if ("compiled", "lit_hf") in runs:
        compiled = ratio(runs, ("compiled", "lit_hf"), ("fp32", "plain"))
        lines.append(f"compiled: lit_hf >= 1.8x plain fp32: {verdict(compiled, 1.8)}")
    return lines


def chunked_targets(runs: dict, validation: bool) -> list[str]:
    """Issue 22's targets for the chunked loss (`lit_chunked`) against the plain loop, where both ran."""
    chunked, plain = "lit_chunked", "plain"
    if validation:
        return [f"validate >= 1.2x the plain no_grad loop (float64 NLL of full logits), {variant}: "
                f"{verdict(ratio(runs, (variant, chunked), (variant, plain)), 1.2)}, "
                f"ppl {ppl_drift(runs, (variant, chunked), (variant, plain))}"
                for variant in VARIANTS if (variant, chunked) in runs]  # fmt: skip
    lines = [f"{variant}: >= {bound}x plain fp32: {verdict(ratio(runs, (variant, chunked), ('fp32', plain)), bound)}"
             for variant, bound in (("fp32", 1.15), ("bf16-mixed", 1.9), ("compiled", 2.1))
             if (variant, chunked) in runs]  # fmt: skip
    for variant in VARIANTS:
        if (variant, chunked) in runs and (variant, plain) in runs:
            rss = [median(runs[(variant, system)], "peak_rss_gb") for system in (chunked, plain)]
            lines.append(
                f"{variant}: peak RSS {rss[0]:.2f} GB against the plain loop's {rss[1]:.2f} GB "
                f"({100 * (1 - rss[0] / rss[1]):.0f}% lower; target >= 40% for the large vocabulary)"
            )
        if (variant, chunked) in runs and (variant, "lit_hf") in runs:  # the same data order and dropout draws
            lines.append(f"{variant}: val ppl after training, chunked against lit_hf without it (target within 1e-5): "
                         f"{ppl_drift(runs, (variant, chunked), (variant, 'lit_hf'))}")  # fmt: skip
    return lines


def ppl_drift(runs: dict, a: tuple[str, str], b: tuple[str, str]) -> str:
    """How far a's validation perplexity is from b's, relative (medians over rounds)."""
    return f"{median(runs[a], 'val_ppl') / median(runs[b], 'val_ppl') - 1:+.1e} relative"


def effects(runs: dict, systems: list[str]) -> list[str]:
    """Compile seconds (the compiled run's first step less the bf16-mixed run's: both load the same, the compiled
    one compiles too) and gradient checkpointing against fp32 (speed and peak RSS), per system."""
    lines = []
    for system in systems:
        if ("compiled", system) in runs and ("bf16-mixed", system) in runs:
            first = [median(runs[(v, system)], "first_step_sec") for v in ("compiled", "bf16-mixed")]
            lines.append(f"{system}: compiling takes {first[0] - first[1]:.1f} s (first step {first[0]:.1f} s "
                         f"against {first[1]:.1f} s)")  # fmt: skip
        if ("checkpointed", system) in runs and ("fp32", system) in runs:
            speed = ratio(runs, ("checkpointed", system), ("fp32", system))
            rss = [median(runs[(v, system)], "peak_rss_gb") for v in ("checkpointed", "fp32")]
            lines.append(f"{system}: gradient checkpointing {speed:.2f}x the fp32 tokens/s, peak RSS {rss[0]:.2f} GB "
                         f"against {rss[1]:.2f} GB")  # fmt: skip
    return lines


def main() -> None:
    args = parse_args()
    if args.worker:
        return worker(args)
    steps = f"{args.steps} {'validation batches' if args.validation else 'steps'} ({args.warmup} untimed) of "
    steps += f"{args.batch} x {args.block} tokens"
    print(f"torch {torch.__version__}, {args.threads} threads of {os.cpu_count()} CPUs; {steps}; {args.repeats} rounds")
    with tempfile.TemporaryDirectory(prefix="bench-causal-lm-") as tmp:
        make_inputs(Path(tmp), args)
        print_report(run_all(Path(tmp), args), args)


if __name__ == "__main__":
    main()
