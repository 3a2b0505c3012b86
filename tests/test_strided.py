"""Strided (sliding-window) perplexity: the Hugging Face guide's loop on a trained GPT-2, 1 and 3 processes,
stride = block_size against disjoint blocks, and the strides refused."""

from pathlib import Path

import numpy as np
import pytest
from reference import (
    read_results,
    reference_blocks,
    reference_perplexity,
    reference_strided,
    reference_tokens,
    wiki_00_held_out,
)
from runs import family_args
from test_distributed import launch

import lit_hf.data.causal_lm_inputs as strided
from lit_hf.cli import main
from lit_hf.data import LanguageModelingDataModule

BLOCK, STRIDE = 64, 16
RUN = ["--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
CLM = [*family_args("causal_lm"), *RUN]


def lines_of(data_dir: Path, tokenizer, tokens: int) -> list[str]:
    """The first lines of WikiText-2's validation text that hold at least `tokens` tokens."""
    lines, count = [], 0
    for line in (data_dir / "wikitext" / "wikitext-2" / "valid.txt").read_text(encoding="utf-8").splitlines(True):
        lines.append(line)
        count += len(tokenizer(line)["input_ids"])
        if count >= tokens:
            return lines
    raise AssertionError("not enough text")


def validate(root: Path, model_dir: Path, text: Path, *options: str) -> dict[str, float]:
    args = [f"--model.model_name_or_path={model_dir}", f"--data.validation_file={text}", *options]
    main(["validate", *CLM, f"--trainer.default_root_dir={root}", f"--data.data_cache_dir={root / 'cache'}", *args])
    return read_results(root)


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("held-out") / "held_out.txt"
    path.write_text(wiki_00_held_out(data_dir), encoding="utf-8")  # 2,176 tokens the model was not trained on
    return path


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory, trained_gpt2_dir: Path, held_out: Path) -> dict:
    root = tmp_path_factory.mktemp("strided-one")
    options = [f"--data.block_size={BLOCK}", f"--data.eval_stride={STRIDE}", "--data.eval_batch_size=8"]
    return validate(root, trained_gpt2_dir, held_out, *options)


def test_strided_perplexity_equals_the_guides_loop(one_process, trained_gpt2_dir, held_out, gpt2_tokenizer):
    ids = reference_tokens(held_out, gpt2_tokenizer)
    want = reference_strided(trained_gpt2_dir, ids, BLOCK, STRIDE)
    assert want["loss"] < 8.5  # trained: uniform guessing over 50,257 tokens gives 10.8
    assert one_process["val/scored_tokens"] == want["scored_tokens"] == len(ids) - 1  # every token after the first
    for name in ("loss", "ppl", "accuracy"):
        assert one_process[f"val/{name}"] == pytest.approx(want[name], rel=1e-9), name
    # More context per token than disjoint blocks give (their first tokens predicted from nothing or little).
    blocks = reference_blocks(held_out, gpt2_tokenizer, BLOCK)
    assert want["ppl"] < reference_perplexity(trained_gpt2_dir, blocks)["ppl"]


def test_three_processes_equal_one(tmp_path, one_process, trained_gpt2_dir, held_out):
    """`test` on 3 processes (gloo) against `validate` on one: the windows are sharded, never repeated or padded."""
    launch(
        "test",
        3,
        tmp_path,
        f"--model.model_name_or_path={trained_gpt2_dir}",
        f"--data.test_file={held_out}",
        f"--data.data_cache_dir={tmp_path / 'cache'}",
        f"--data.block_size={BLOCK}",
        f"--data.eval_stride={STRIDE}",
        "--data.eval_batch_size=8",  # 133 windows: 45 + 44 + 44, in 6 batches each
    )
    three = read_results(tmp_path)
    assert three["test/scored_tokens"] == one_process["val/scored_tokens"]
    for name in ("loss", "ppl", "accuracy"):
        assert three[f"test/{name}"] == pytest.approx(one_process[f"val/{name}"], rel=1e-9), name


def test_stride_of_a_block_is_disjoint_blocks_and_scores_the_remainder(tmp_path, data_dir, causal_lm_dir,
                                                                       gpt2_tokenizer):  # fmt: skip
    """stride = block_size: the blocks of today's evaluation when the stream is whole blocks; else also the
    remainder, as the guide scores it (its first token unpredicted, like every window's)."""
    model_dir, lines = causal_lm_dir("gpt2"), lines_of(data_dir, gpt2_tokenizer, 300)
    whole = tmp_path / "whole.txt"
    whole.write_text("".join(lines), encoding="utf-8")
    n = len(reference_tokens(whole, gpt2_tokenizer))
    block = next(size for size in range(100, 20, -1) if n % size == 0)  # a block that divides the stream
    options = [f"--data.block_size={block}", "--data.eval_batch_size=2"]
    blocks = validate(tmp_path / "blocks", model_dir, whole, *options)
    windows = validate(tmp_path / "windows", model_dir, whole, *options, f"--data.eval_stride={block}")
    assert windows == blocks and blocks["val/scored_tokens"] == n - n // block

    more = tmp_path / "more.txt"
    more.write_text("".join(lines) + "A sentence of a few more tokens .\n", encoding="utf-8")
    ids = reference_tokens(more, gpt2_tokenizer)
    assert len(ids) % block != 0
    blocks = validate(tmp_path / "more-blocks", model_dir, more, *options)
    windows = validate(tmp_path / "more-windows", model_dir, more, *options, f"--data.eval_stride={block}")
    want = reference_strided(model_dir, ids, block, block)
    assert windows["val/scored_tokens"] == want["scored_tokens"] == blocks["val/scored_tokens"] + len(ids) % block - 1
    assert windows["val/loss"] == pytest.approx(want["loss"], rel=1e-9) and windows["val/loss"] != blocks["val/loss"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--data.block_size=64", "--data.eval_stride=0"], "eval_stride must be 1 or more"),
        (["--data.block_size=64", "--data.eval_stride=65"], "eval_stride 65 is larger than block_size 64"),
        (["--data.eval_stride=129"], "eval_stride 129 is larger than block_size 128"),  # the model's 128 positions
        (["--data.block_size=64", "--data.eval_stride=64", "--data.packing=true"], "packing=true do not combine"),
    ],
)
def test_a_stride_outside_the_block_is_refused_in_one_line(tmp_path, capsys, causal_lm_dir, data_dir, options,
                                                           message):  # fmt: skip
    text = data_dir / "wikitext" / "wikitext-2" / "valid.txt"
    with pytest.raises(SystemExit) as exit_:
        validate(tmp_path, causal_lm_dir("gpt2"), text, *options)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("lit_hf: error: ") and message in err.strip().splitlines()[-1]
    assert not list(tmp_path.rglob("version_*")) and not list(tmp_path.rglob("results*.json"))


def guide_windows(n: int, block: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first scored position) of each window of the guide's loop over n tokens."""
    windows, prev_end = [], 0
    for begin in range(0, n, stride):
        end = min(begin + block, n)
        windows.append((begin, end, prev_end - begin if begin else 0))  # the guide masks all but the last trg_len
        prev_end = end
        if end == n:
            break
    return windows


def test_windows_written_chunk_by_chunk_are_the_guides(tmp_path, monkeypatch):
    """Streams of 1 to 101 tokens in pieces of any length, strides from 1 to the block: the windows (tokens and
    first scored position) of the guide's loop, with the writer flushing every 7 tokens, inside windows."""
    monkeypatch.setattr(strided, "CHUNK_TOKENS", 7)
    rng = np.random.default_rng(0)
    for n in (1, 2, 15, 16, 17, 33, 101):
        ids = np.arange(n, dtype=np.int32)
        pieces = [(piece, np.array([len(piece)])) for piece in np.split(ids, np.sort(rng.integers(0, n, 3)))]
        for block in (4, 16):
            for stride in sorted({1, 3, block // 2, block - 1, block}):
                windows, tokens = strided.write_windows(pieces, block, stride, tmp_path / f"{n}-{block}-{stride}")
                got = [(int(w["input_ids"][0]), int(w["input_ids"][-1]) + 1, w["score_from"]) for w in windows]
                assert tokens == n and got == guide_windows(n, block, stride), (n, block, stride)
                assert all(list(w["input_ids"]) == list(range(w["input_ids"][0], w["input_ids"][-1] + 1))
                           for w in windows)  # fmt: skip


def test_streamed_training_leaves_the_evaluation_windows_as_they_are(tmp_path, data_dir, causal_lm_dir,
                                                                     gpt2_tokenizer):  # fmt: skip
    text = data_dir / "wikitext" / "wiki_00"
    options = {
        "model_name_or_path": str(causal_lm_dir("gpt2")),
        "validation_file": str(text),
        "block_size": 64,
        "eval_stride": 48,
    }
    windows = {}
    for streaming in (False, True):
        dm = LanguageModelingDataModule(data_cache_dir=str(tmp_path / str(streaming)), streaming=streaming, **options)
        dm.prepare_data()
        dm.setup("validate")
        windows[streaming] = [w["input_ids"].tolist() for w in dm.datasets["validation"]]
    n = len(reference_tokens(text, gpt2_tokenizer))
    assert windows[True] == windows[False] and len(windows[True]) == len(guide_windows(n, 64, 48))
