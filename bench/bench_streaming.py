"""Streamed against map-style training data for causal LM: blocks per second and peak RSS of one training epoch.

WikiText-2 valid text (../shared/data, or $LIT_HF_TEST_DATA) repeated to each corpus size, the GPT-2 tokenizer,
blocks of 128, batches of 8. Each run is a fresh process that builds `LanguageModelingDataModule` and reads one
epoch of its training loader, no model: map-style tokenizes and caches in `prepare_data` (an empty cache per run,
so its first epoch is timed), streaming tokenizes as it reads. Blocks/s counts from `prepare_data` to the last
batch; peak RSS is the process's own (ru_maxrss).

Resume: on the largest corpus, a streamed loader given the checkpoint state of batch `--resume-at` (a fraction of
the epoch; the place computed here from the corpus tokenized line by line) against the same state without a place
(which makes the epoch's blocks again and leaves out those consumed): seconds to the first batch, each checked to be
that batch of the token stream.

    python bench/bench_streaming.py [--megabytes 2 12] [--resume-at 0.9]
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LIT_HF_TEST_DATA", REPO.parent / "shared" / "data"))

RUN = """import resource, sys, time
from lit_hf.data import LanguageModelingDataModule
from lit_hf.options import HubOptions
tokenizer, corpus, cache, mode = sys.argv[1:]
dm = LanguageModelingDataModule(hub=HubOptions(tokenizer_name=tokenizer), train_file=corpus, data_cache_dir=cache,
    streaming=mode == "streaming", validation_split_percentage=0, block_size=128, batch_size=8)
start = time.perf_counter()
dm.prepare_data(); dm.setup("fit")
blocks = sum(len(batch["input_ids"]) for batch in dm.train_dataloader())
print(blocks, blocks / (time.perf_counter() - start), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


RESUME = """import sys, time
import numpy as np
from transformers import AutoTokenizer
from lit_hf.data import LanguageModelingDataModule
from lit_hf.options import HubOptions
tokenizer, corpus, cache, fraction = sys.argv[1:]
batch, block = 8, 128
lines = open(corpus, encoding="utf-8").read().splitlines(keepends=True)
rows = AutoTokenizer.from_pretrained(tokenizer)(lines)["input_ids"]
stream = np.concatenate([np.array(row, dtype=np.int64) for row in rows])
seen = int(len(stream) // (batch * block) * float(fraction))  # batches consumed before the checkpoint
ends = np.cumsum([len(row) for row in rows])
row = int(np.searchsorted(ends, seen * batch * block, side="right"))  # the place: the row with the next token
place = [row, seen * batch * block - (int(ends[row - 1]) if row else 0)]
want = stream[seen * batch * block : (seen + 1) * batch * block].reshape(batch, block)
dm = LanguageModelingDataModule(hub=HubOptions(tokenizer_name=tokenizer), train_file=corpus, data_cache_dir=cache,
    streaming=True, validation_split_percentage=0, block_size=block, batch_size=batch)
dm.prepare_data(); dm.setup("fit")
for places in ([place], None):
    loader = dm.train_dataloader()
    loader.load_state_dict({"epoch": 0, "seed": 0, "seen": seen, "places": places})
    start = time.perf_counter()
    got = next(iter(loader))["input_ids"].numpy()
    print(seen, time.perf_counter() - start, int(np.array_equal(got, want)))
"""


def resume(tokenizer: Path, corpus: Path, cache: Path, fraction: float) -> list[tuple[int, float, bool]]:
    """(batch resumed at, seconds to it, equal to the stream's) by place, then by making the blocks again."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", RESUME, str(tokenizer), str(corpus), str(cache), str(fraction)],
                          env=env, capture_output=True, text=True, check=True)  # fmt: skip
    lines = done.stdout.split("\n")[-3:-1]
    return [(int(seen), float(seconds), equal == "1") for seen, seconds, equal in map(str.split, lines)]


def run(tokenizer: Path, corpus: Path, cache: Path, mode: str) -> tuple[int, float, float]:
    """(blocks, blocks per second, peak RSS in MiB) of one epoch in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", RUN, str(tokenizer), str(corpus), str(cache), mode], env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    blocks, rate, peak = done.stdout.split()[-3:]
    return int(blocks), float(rate), int(peak) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, nargs="+", default=[2, 12])
    parser.add_argument("--resume-at", type=float, default=0.9, help="fraction of the epoch consumed before resuming")
    args = parser.parse_args()
    from transformers import GPT2Tokenizer

    text = (DATA / "wikitext/wikitext-2/valid.txt").read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = Path(tmp) / "tokenizer"
        GPT2Tokenizer.from_pretrained(DATA / "tokenizers/gpt2").save_pretrained(tokenizer)
        peaks = {}
        print(f"{'corpus':>8} {'mode':>10} {'blocks':>8} {'blocks/s':>9} {'peak RSS':>10}")
        for megabytes in args.megabytes:
            corpus = Path(tmp) / f"corpus-{megabytes}mb.txt"
            corpus.write_text((text * (megabytes * 2**20 // len(text) + 1))[: megabytes * 2**20])
            rates = {}
            for mode in ("map-style", "streaming"):
                blocks, rates[mode], peaks[megabytes, mode] = run(
                    tokenizer, corpus, Path(tmp) / f"{mode}-{megabytes}", mode
                )
                print(f"{megabytes:>6}MB {mode:>10} {blocks:>8} {rates[mode]:>9.0f} {peaks[megabytes, mode]:>7.1f}MiB")
            print(f"{'':>8} streaming/map-style blocks/s: {rates['streaming'] / rates['map-style']:.2f}")
        small, large = min(args.megabytes), max(args.megabytes)
        for mode in ("map-style", "streaming"):
            print(f"peak RSS growth {small} -> {large} MB, {mode}: {peaks[large, mode] - peaks[small, mode]:+.1f} MiB")
        corpus = Path(tmp) / f"corpus-{large}mb.txt"
        (seen, by_place, same), (_, again, same_again) = resume(tokenizer, corpus, Path(tmp) / "resume", args.resume_at)
        print(
            f"streamed resume at batch {seen} of {large} MB: first batch after {by_place:.2f} s from the checkpoint's "
            f"place, {again:.2f} s making the blocks again ({again / by_place:.1f}x); "
            f"both the stream's batch: {same and same_again}"
        )


if __name__ == "__main__":
    main()
