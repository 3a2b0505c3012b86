"""Peak memory of grouping a generated token stream into blocks: lit_hf's chunked writer against one pass.

    python bench/bench_group_memory.py [--tokens 100e6] [--block 1024] [--no-packing] [--one-pass]

Rows of 1..500 random token ids (seeded) are made piece by piece, as the tokenizer hands them over, and grouped
by `causal_lm_inputs.write_blocks` into an Arrow file. Prints one JSON line: the stream's size in MB (int32 ids), the
peak RSS before and after grouping (`ru_maxrss`) and their difference. `--one-pass` instead concatenates the
whole stream and computes the positions at once, as `group_blocks` did before the chunked writer (main cfe1ddc).
Each run is its own process (tests/test_lm_blocks.py runs a small one).
"""

import argparse
import json
import resource
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROWS_PER_PIECE = 1000


def pieces(tokens: int, seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    made = 0
    while made < tokens:
        lengths = rng.integers(1, 500, ROWS_PER_PIECE).astype(np.int64)
        ids = rng.integers(0, 50257, int(lengths.sum()), dtype=np.int32)
        made += len(ids)
        yield ids, lengths


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def one_pass(tokens: int, block: int, packing: bool) -> tuple[int, int]:
    from lit_hf.data.causal_lm_inputs import document_positions

    parts = list(pieces(tokens))
    stream = np.concatenate([ids for ids, _ in parts])
    usable = len(stream) // block * block
    blocks = stream[:usable].astype(np.int32).reshape(-1, block)
    if packing:
        positions = document_positions(np.concatenate([lengths for _, lengths in parts]), block)[:usable]
        positions.astype(np.int32)
    return len(blocks), len(stream)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=float, default=100e6)
    parser.add_argument("--block", type=int, default=1024)
    parser.add_argument("--no-packing", action="store_true")
    parser.add_argument("--one-pass", action="store_true")
    args = parser.parse_args()
    from lit_hf.data.causal_lm_inputs import write_blocks

    tokens, packing = int(args.tokens), not args.no_packing
    next(pieces(1))  # numpy's generator and first allocations before the baseline
    before = peak_mb()
    if args.one_pass:
        n_blocks, n_tokens = one_pass(tokens, args.block, packing)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            blocks, n_tokens = write_blocks(pieces(tokens), args.block, packing, Path(tmp) / "blocks.arrow")
            n_blocks = len(blocks)
    after = peak_mb()
    stream_mb = n_tokens * 4 / 2**20
    way = "one pass" if args.one_pass else "chunked"
    result = {"way": way, "packing": packing, "blocks": n_blocks, "stream_mb": round(stream_mb, 1)}
    result.update({"peak_before_mb": round(before, 1), "peak_after_mb": round(after, 1)})
    print(json.dumps({**result, "grouping_mb": round(after - before, 1)}))


if __name__ == "__main__":
    main()
