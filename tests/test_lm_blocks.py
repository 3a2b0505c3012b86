"""Blocks written chunk by chunk: equal to one plain pass over the stream, the same with 2 tokenizing processes,
and grouping a generated stream with peak memory well under the stream's size."""

import multiprocessing
import resource
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from reference import reference_blocks

import lit_hf.data.causal_lm_inputs as lm_blocks
from lit_hf.data import LanguageModelingDataModule
from lit_hf.data.causal_lm_inputs import list_pieces, write_blocks
from lit_hf.options import HubOptions


def plain_blocks(rows: list[list[int]], block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """All rows joined and cut into blocks; each token's position counts from its row's start or the block's."""
    stream, positions = [], []
    for row in rows:
        for offset, token in enumerate(row):
            stream.append(token)
            block_offset = len(positions) % block_size
            positions.append(min(offset, block_offset))
    n = len(stream) // block_size * block_size
    return np.array(stream[:n]).reshape(-1, block_size), np.array(positions[:n]).reshape(-1, block_size)


def random_rows(rng: np.random.Generator, count: int) -> list[list[int]]:
    lengths = rng.choice([0, 1, 2, 5, 17, 40, 90], size=count)  # empty rows and rows longer than a block
    return [rng.integers(0, 1000, n).tolist() for n in lengths]


@pytest.mark.parametrize("chunk_tokens", [1, 37, 64, 1 << 20])
def test_chunked_blocks_equal_one_plain_pass(tmp_path, monkeypatch, chunk_tokens) -> None:
    monkeypatch.setattr(lm_blocks, "CHUNK_TOKENS", chunk_tokens)  # chunk boundaries inside rows and blocks
    rng = np.random.default_rng(chunk_tokens)
    rows = random_rows(rng, 300)
    pieces = [rows[i : i + 7] for i in range(0, len(rows), 7)]
    arrays = [(np.array(sum(p, []), dtype=np.int32), np.array([len(r) for r in p])) for p in pieces]
    blocks, tokens = write_blocks(arrays, 16, packing=True, path=tmp_path / "blocks.arrow")
    want_ids, want_positions = plain_blocks(rows, 16)
    assert tokens == sum(map(len, rows)) and len(blocks) == len(want_ids) > 100
    np.testing.assert_array_equal(np.stack(blocks.with_format("numpy")["input_ids"]), want_ids)
    np.testing.assert_array_equal(np.stack(blocks.with_format("numpy")["position_ids"]), want_positions)


def test_group_blocks_of_an_arrow_list_column(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(lm_blocks, "CHUNK_TOKENS", 50)
    rows = random_rows(np.random.default_rng(1), 500)
    column = pa.chunked_array([pa.array(rows[:123], pa.list_(pa.int64())), pa.array(rows[123:], pa.list_(pa.int64()))])
    blocks = write_blocks(list_pieces(column), 32, True, tmp_path / "blocks.arrow")[0].with_format("numpy")
    want_ids, want_positions = plain_blocks(rows, 32)
    np.testing.assert_array_equal(np.stack(blocks["input_ids"]), want_ids)
    np.testing.assert_array_equal(np.stack(blocks["position_ids"]), want_positions)


def test_two_workers_and_a_carved_split_give_the_reference_blocks(tmp_path, data_dir, causal_lm_dir, gpt2_tokenizer):
    source = data_dir / "wikitext" / "wiki_00"
    dm = LanguageModelingDataModule(
        hub=HubOptions(tokenizer_name=str(causal_lm_dir("gpt2"))),
        train_file=str(source),
        validation_split_percentage=20,  # the first 20 % of lines: a `select` of the raw split
        block_size=64,
        preprocessing_num_workers=2,
        data_cache_dir=str(tmp_path / "cache"),
    )
    dm.prepare_data()
    dm.setup("fit")
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    cut = round(len(lines) * 0.2)
    for split, part in (("validation", lines[:cut]), ("train", lines[cut:])):
        (tmp_path / f"{split}.txt").write_text("".join(part), encoding="utf-8")
        expected = reference_blocks(tmp_path / f"{split}.txt", gpt2_tokenizer, 64)
        np.testing.assert_array_equal(np.stack(dm.datasets[split]["input_ids"]), expected)


def group_generated(tokens: int, path: Path, out: multiprocessing.Queue) -> None:
    """In a forked child: the growth of peak RSS while grouping `tokens` random ids that arrive in pieces."""

    def pieces():
        rng = np.random.default_rng(0)
        made = 0
        while made < tokens:
            lengths = rng.integers(1, 500, 1000)
            made += int(lengths.sum())
            yield rng.integers(0, 50257, int(lengths.sum()), dtype=np.int32), lengths

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    blocks, n = write_blocks(pieces(), 1024, packing=True, path=path)
    out.put((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, n, len(blocks)))


def test_grouping_memory_stays_well_under_the_stream(tmp_path) -> None:
    context = multiprocessing.get_context("fork")  # a fresh peak, without importing everything again
    queue = context.Queue()
    child = context.Process(target=group_generated, args=(30_000_000, tmp_path / "blocks.arrow", queue))
    child.start()
    grown_kib, tokens, blocks = queue.get(timeout=300)
    child.join()
    stream_kib = tokens * 4 / 1024  # the int32 ids alone; grouping them in one pass held ~5x that (packing)
    assert blocks == tokens // 1024 and tokens >= 30_000_000
    assert grown_kib < stream_kib / 4, f"peak RSS grew {grown_kib / 1024:.0f} MiB, stream {stream_kib / 1024:.0f} MiB"
