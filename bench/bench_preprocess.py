"""Language-modeling preprocessing, cold: lit_hf `prepare_data` + `setup("fit")` against run_clm.py's code path.

The peer is run_clm.py's (transformers examples/pytorch/language-modeling, main @ 00d481d1): `load_dataset("text",
data_files=...)`, `map(tokenize_function, batched=True, num_proc=workers, remove_columns=...)`, then
`map(group_texts, batched=True, num_proc=workers)`, with its two functions copied below. The data is WikiText-2
valid from ../shared/data (or $LIT_HF_TEST_DATA; test is not there): train = valid repeated `--copies` times,
validation = valid once; the GPT-2 tokenizer (fast, from vocab.json + merges.txt), blocks of 1024.

    python bench/bench_preprocess.py [--copies 10] [--repeats 3] [--workers 1 2]

Every run is its own process with fresh cache folders (HF_DATASETS_CACHE and lit_hf's data_cache_dir), so all
are cold; the timed part is from the first data call (after imports) to the end. Also measured: lit_hf reloading
its cache in a fresh process, run_clm's `map`s finding theirs, `python -m lit_hf --help`, and the seconds from the
command to the end of the first training step of `python -m lit_hf fit --config configs/quickstart_clm.yaml`.
Checks that lit_hf's blocks are run_clm's token stream cut into blocks (run_clm's `group_texts` over the whole
split in one batch; run_clm itself groups every 1,000 lines apart and drops each group's remainder).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import chain
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCK = 1024


def make_corpus(work: Path, copies: int) -> dict[str, str]:
    data_dir = Path(os.environ.get("LIT_HF_TEST_DATA", REPO.parent / "shared" / "data"))
    valid = (data_dir / "wikitext/wikitext-2/valid.txt").read_text(encoding="utf-8")
    (work / "train.txt").write_text(valid * copies, encoding="utf-8")
    (work / "validation.txt").write_text(valid, encoding="utf-8")
    from transformers import GPT2TokenizerFast

    GPT2TokenizerFast.from_pretrained(data_dir / "tokenizers/gpt2").save_pretrained(work / "gpt2")
    return {"train": str(work / "train.txt"), "validation": str(work / "validation.txt")}


def run_peer(work: Path, workers: int, dump: bool) -> dict:
    """run_clm.py's preprocessing, its functions as written there (minus the long-input warning capture)."""
    from datasets import load_dataset
    from transformers import AutoTokenizer

    start = time.perf_counter()
    files = {"train": str(work / "train.txt"), "validation": str(work / "validation.txt")}
    raw_datasets = load_dataset("text", data_files=files, keep_linebreaks=True)
    tokenizer = AutoTokenizer.from_pretrained(str(work / "gpt2"))
    column_names = list(raw_datasets["train"].features)
    text_column_name = "text" if "text" in column_names else column_names[0]

    def tokenize_function(examples):
        return tokenizer(examples[text_column_name])

    tokenized_datasets = raw_datasets.map(
        tokenize_function, batched=True, num_proc=workers, remove_columns=column_names, desc="tokenize"
    )
    block_size = BLOCK

    def group_texts(examples):
        concatenated_examples = {k: list(chain(*examples[k])) for k in examples}
        total_length = len(concatenated_examples[list(examples.keys())[0]])
        total_length = (total_length // block_size) * block_size
        result = {
            k: [t[i : i + block_size] for i in range(0, total_length, block_size)]
            for k, t in concatenated_examples.items()
        }
        result["labels"] = result["input_ids"].copy()
        return result

    lm_datasets = tokenized_datasets.map(group_texts, batched=True, num_proc=workers, desc="group")
    seconds = time.perf_counter() - start
    out = {"seconds": seconds, "blocks": {s: len(d) for s, d in lm_datasets.items()}}
    if dump:  # run_clm's token stream of each split, for the check (not timed)
        import numpy as np
        import pyarrow.compute as pc

        for split, data in tokenized_datasets.items():
            stream = pc.list_flatten(data.data.column("input_ids")).to_numpy()
            np.save(work / f"peer-{split}.npy", stream)
    return out


def run_lit_hf(work: Path, workers: int, dump: bool) -> dict:
    from lit_hf.data import LanguageModelingDataModule
    from lit_hf.options import HubOptions

    start = time.perf_counter()
    dm = LanguageModelingDataModule(
        hub=HubOptions(tokenizer_name=str(work / "gpt2")),
        train_file=str(work / "train.txt"),
        validation_file=str(work / "validation.txt"),
        block_size=BLOCK,
        preprocessing_num_workers=workers,
        data_cache_dir=str(work / "lit_hf_cache"),
    )
    dm.prepare_data()
    dm.setup("fit")
    seconds = time.perf_counter() - start
    out = {"seconds": seconds, "blocks": {s: len(d) for s, d in dm.datasets.items()}}
    if dump:
        import numpy as np

        for split, data in dm.datasets.items():
            np.save(work / f"lit_hf-{split}.npy", np.stack(data["input_ids"]))
    return out


def child(args: argparse.Namespace) -> None:
    """One run in this process; prints its result as one JSON line."""
    work = Path(args.work)
    run = run_peer if args.child == "peer" else run_lit_hf
    print("RESULT " + json.dumps(run(work, args.workers[0], args.dump)), flush=True)


def spawn(system: str, work: Path, workers: int, cache: Path, dump: bool = False) -> dict:
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [sys.executable, __file__, "--child", system, "--work", str(work), "--workers", str(workers)]
    proc = subprocess.run(cmd + (["--dump"] if dump else []), env=env, capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.exit(f"{system} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def cold(system: str, work: Path, workers: int, dump: bool = False) -> dict:
    """A run with fresh caches (lit_hf's lives under `work`, so it goes too)."""
    shutil.rmtree(work / "hf_cache", ignore_errors=True)
    shutil.rmtree(work / "lit_hf_cache", ignore_errors=True)
    return spawn(system, work, workers, work / "hf_cache", dump)


def check_blocks(work: Path, lit: dict, peer: dict) -> None:
    import numpy as np

    for split in ("train", "validation"):
        stream = np.load(work / f"peer-{split}.npy")
        n = len(stream) // BLOCK
        same = np.array_equal(np.load(work / f"lit_hf-{split}.npy"), stream[: n * BLOCK].reshape(n, BLOCK))
        print(
            f"{split}: {len(stream):,} tokens; lit_hf {lit['blocks'][split]} blocks "
            f"{'==' if same else '!='} run_clm's stream in blocks of {BLOCK} ({n}); "
            f"run_clm's per-1000-line grouping keeps {peer['blocks'][split]}"
        )
        if not same:
            sys.exit("lit_hf's blocks differ from run_clm's token stream")


def wall(cmd: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def first_step(work: Path) -> float:
    """Seconds from the command to the end of the first training step (a callback prints the wall clock)."""
    callback = "--trainer.callbacks+=bench_preprocess.FirstStepClock"
    cmd = [sys.executable, "-m", "lit_hf", "fit", "--config", "configs/quickstart_clm.yaml", callback]
    cmd += ["--trainer.max_steps=1", f"--trainer.default_root_dir={work / 'quickstart'}"]
    cmd += [f"--data.data_cache_dir={work / 'quickstart_cache'}", "--trainer.enable_progress_bar=false"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "bench"), "HF_DATASETS_CACHE": str(work / "quickstart_hf")}
    start = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    stamps = [float(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("FIRST_STEP_END ")]
    if proc.returncode or not stamps:
        sys.exit(f"quickstart run failed:\n{proc.stderr[-3000:]}")
    return stamps[0] - start


try:
    import lightning as L

    class FirstStepClock(L.Callback):
        """Prints the wall clock at the end of the first training batch (after its optimizer step)."""

        def on_train_batch_end(self, trainer, *args, **kwargs) -> None:
            if trainer.global_step == 1:
                print(f"FIRST_STEP_END {time.time()}", flush=True)
except ImportError:  # only the --child peer runs without lightning
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=10, help="times WikiText-2 valid is repeated for train")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--child", choices=["peer", "lit_hf"], help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--dump", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    work = Path(tempfile.mkdtemp(prefix="bench-preprocess-"))
    make_corpus(work, args.copies)
    print(f"corpus: WikiText-2 valid x{args.copies} (train) + x1 (validation), blocks of {BLOCK}; work dir {work}")
    peer = cold("peer", work, 1, dump=True)
    check_blocks(work, cold("lit_hf", work, 1, dump=True), peer)
    for workers in args.workers:
        times = {s: [] for s in ("peer", "lit_hf")}
        for _ in range(args.repeats):
            for system in times:  # interleaved, so load drifts hit both alike
                times[system].append(cold(system, work, workers)["seconds"])
        peer_s, lit_s = statistics.median(times["peer"]), statistics.median(times["lit_hf"])
        print(
            f"workers={workers}: run_clm {peer_s:.2f} s, lit_hf {lit_s:.2f} s (medians of {args.repeats}, cold): "
            f"lit_hf {peer_s / lit_s:.2f}x faster  [run_clm {times['peer']}, lit_hf {times['lit_hf']}]"
        )
    reload = [spawn("lit_hf", work, 1, work / "hf_cache")["seconds"] for _ in range(args.repeats)]
    peer_reload = [spawn("peer", work, 1, work / "hf_cache")["seconds"] for _ in range(args.repeats + 1)][1:]
    print(
        f"cache reload (fresh process): lit_hf {statistics.median(reload):.2f} s, run_clm's maps "
        f"{statistics.median(peer_reload):.2f} s"
    )
    print(f"python -m lit_hf --help: {wall([sys.executable, '-m', 'lit_hf', '--help'], args.repeats):.2f} s wall")
    print(f"quickstart_clm.yaml, command to end of first training step: {first_step(work):.2f} s (cold cache)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
