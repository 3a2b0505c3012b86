"""Streamed against map-style training data for causal LM: blocks per second and peak RSS of one training epoch.

WikiText-2 valid text (../shared/data, or $LIT_HF_TEST_DATA) repeated to each corpus size, the GPT-2 tokenizer,
blocks of 128, batches of 8. Each run is a fresh process that builds `LanguageModelingDataModule` and reads one
epoch of its training loader, no model: map-style tokenizes and caches in `prepare_data` (an empty cache per run,
so its first epoch is timed), streaming tokenizes as it reads. Blocks/s counts from `prepare_data` to the last
batch; peak RSS is the process's own (ru_maxrss).

    python bench/bench_streaming.py [--megabytes 2 12]
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
tokenizer, corpus, cache, mode = sys.argv[1:]
dm = LanguageModelingDataModule(tokenizer_name_or_path=tokenizer, train_file=corpus, data_cache_dir=cache,
    streaming=mode == "streaming", validation_split_percentage=0, block_size=128, batch_size=8)
start = time.perf_counter()
dm.prepare_data(); dm.setup("fit")
blocks = sum(len(batch["input_ids"]) for batch in dm.train_dataloader())
print(blocks, blocks / (time.perf_counter() - start), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


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


if __name__ == "__main__":
    main()
