"""A quiet console: a quickstart prints a few lines before it trains, the notices that do not apply to lit_hf are
gone, and a real warning still shows."""

import csv
import logging
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from console_probe import MARKER
from datasets import Dataset, DatasetDict
from transformers import AutoTokenizer

from lit_hf.cli import main
from lit_hf.console import quiet
from lit_hf.data import base
from lit_hf.data.multiple_choice_inputs import tokenize_choices
from lit_hf.data.text_classification_inputs import tokenize_pairs

REPO = Path(__file__).resolve().parents[1]
BEFORE_TRAINING = 8  # lines a quickstart may print before its first training step (today: 2 prepared splits, 1 model)
GONE = (  # what lit_hf silences (lit_hf/console.py), or replaced (the model summary's table, datasets' bars)
    "GPU available",
    "TPU available",
    "Tip:",
    "Seed set to",
    "Loading `train_dataloader`",
    "LeafSpec",
    "loss_type=None",
    "Total FLOPs",
    "Saving the dataset",
    "Tokenize and group",
    "Writing model shards",
)


def test_quickstart_prints_a_few_lines_before_training_and_real_warnings_still(tmp_path: Path) -> None:
    """configs/quickstart_clm.yaml from another folder, as a user runs it, cut to one 2-batch epoch: its
    `log_every_n_steps: 10` then exceeds the epoch's batches, which Lightning rightly warns about."""
    args = [
        "fit", f"--config={REPO / 'configs' / 'quickstart_clm.yaml'}", "--trainer.callbacks+=console_probe.FirstStep",
        f"--data.data_cache_dir={tmp_path / 'cache'}", "--data.max_train_samples=32", "--data.max_eval_samples=16",
        "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "lit_hf", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    stderr = done.stderr.splitlines()
    before = [line for line in done.stdout.splitlines() if "written to" not in line and "saved to" not in line]
    before += stderr[: stderr.index(MARKER)]
    assert len(before) <= BEFORE_TRAINING, "\n".join(before)
    assert "GPT2LMHeadModel in CausalLMTask: " in done.stdout  # the one-line model summary (off: tests/test_runs.py)
    printed = done.stdout + done.stderr
    assert not [notice for notice in GONE if notice in printed], printed
    assert "smaller than the logging interval Trainer(log_every_n_steps=10)" in done.stderr
    assert f"lit_hf: train split prepared: 1,120 examples in '{tmp_path / 'cache'}" in done.stderr  # the whole file


def test_pairs_cut_longest_first_say_nothing_per_pair(caplog: pytest.LogCaptureFixture) -> None:
    """transformers' Python tokenizers log, for every text pair cut with `longest_first`, that overflowing tokens
    are not returned (2,263 lines on RTE); lit_hf never asks for them. Other tokenizer warnings still show."""
    quiet()
    tokenizer = AutoTokenizer.from_pretrained(REPO / "configs" / "quickstart" / "byte-bert")  # a Python tokenizer
    batch = {"a": ["a long first sentence of many words"] * 3, "b": ["and a long second one, also of words"] * 3}
    with caplog.at_level(logging.WARNING):
        ids = tokenize_pairs(
            batch, tokenizer=tokenizer, text_column="a", text_pair_column="b", max_length=8,
            truncation="longest_first", padding=False,
        )  # fmt: skip
        logging.getLogger("transformers.tokenization_python").warning("a real tokenizer warning")
    assert [len(row) for row in ids["input_ids"]] == [8, 8, 8]  # the pairs were cut
    assert [record.getMessage() for record in caplog.records] == ["a real tokenizer warning"]


@pytest.mark.parametrize(("rows", "bars"), [(4, False), (5, True)])
def test_datasets_bars_show_only_for_long_preparations(tmp_path, monkeypatch, rows, bars) -> None:
    """A split of `LONG_PREPARATION` raw rows or more keeps `datasets`' progress bars (here 5); a smaller one is
    prepared without them, and the bars are as they were afterwards."""
    monkeypatch.setattr(base, "LONG_PREPARATION", 5)
    seen = {}

    def build(raw: DatasetDict, split: str, tag: str) -> Dataset:
        seen[split] = datasets.is_progress_bar_enabled()
        return raw[split]

    raw = DatasetDict({"train": Dataset.from_dict({"x": list(range(rows))})})
    base.prepare_splits({"train": (tmp_path / "train", {"k": 1})}, lambda: raw, build, overwrite=False)
    assert seen == {"train": bars} and datasets.is_progress_bar_enabled()


def test_truncation_is_said_once_per_split_with_its_count(tmp_path, monkeypatch, caplog) -> None:
    """The classification quickstart cut to 24 tokens says, per split, how many of its examples were cut: one line
    each, counted by the tokenizer alone here (no line for a split with none cut, none per example)."""
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO)
    config = REPO / "configs" / "quickstart_classification.yaml"
    main(["fit", f"--config={config}", "--data.max_seq_length=24", "--data.max_train_samples=32",
          "--trainer.max_steps=1", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
          "--data.data_cache_dir=cache"])  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(REPO / "configs" / "quickstart" / "byte-bert")
    said = "\n".join(record.getMessage() for record in caplog.records)
    for split in ("train", "validation"):
        texts = list(csv.DictReader((config.parent / "quickstart" / "reviews" / f"{split}.csv").open()))
        cut = sum(len(tokenizer(row["text"])["input_ids"]) > 24 for row in texts)
        assert 0 < cut < len(texts)
        assert said.count(f"lit_hf: {split} split: {cut:,} of {len(texts):,} examples cut to 24 tokens") == 1
    assert said.count("cut to") == 2


def test_translation_says_its_cut_sources_and_targets(tmp_path, monkeypatch, caplog) -> None:
    """Sources and targets have their own limits, so each is counted (translation quickstart at 30 and 32 bytes)."""
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO)
    config = REPO / "configs" / "quickstart_translation.yaml"
    main(["fit", f"--config={config}", "--data.max_source_length=30", "--data.max_target_length=32",
          "--data.max_train_samples=16", "--trainer.max_steps=1", "--trainer.limit_val_batches=1",
          "--trainer.enable_progress_bar=false", "--data.data_cache_dir=cache"])  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(REPO / "configs" / "quickstart" / "byte-t5")
    said = "\n".join(record.getMessage() for record in caplog.records)
    for split in ("train", "validation"):
        rows = list(
            csv.DictReader((config.parent / "quickstart" / "en-de-phrases" / f"{split}.tsv").open(), delimiter="\t")
        )
        sources = sum(len(tokenizer(row["en"])["input_ids"]) > 30 for row in rows)
        targets = sum(len(tokenizer(text_target=row["de"])["input_ids"]) > 32 for row in rows)
        assert 0 < sources < targets < len(rows)
        assert f"lit_hf: {split} split: {sources:,} of {len(rows):,} sources cut to 30 tokens" in said
        assert f"lit_hf: {split} split: {targets:,} of {len(rows):,} targets cut to 32 tokens" in said
    assert said.count("cut to") == 4


def test_a_multiple_choice_example_is_cut_when_any_choice_is() -> None:
    tokenizer = AutoTokenizer.from_pretrained(REPO / "configs" / "quickstart" / "byte-bert")
    batch = {"ctx": ["A short start.", "A start"], "a": ["ends.", "ends."], "b": ["ends much later on.", "ends."]}
    out = tokenize_choices(
        batch, tokenizer=tokenizer, context_column="ctx", question_column=None, ending_columns=["a", "b"],
        choices_column=None, num_choices=2, max_length=24, padding=False,
    )  # fmt: skip
    lengths = [[len(tokenizer(batch["ctx"][i], batch[c][i])["input_ids"]) for c in "ab"] for i in range(2)]
    assert lengths[0][0] <= 24 < lengths[0][1] and max(lengths[1]) <= 24  # the first's second choice is cut
    assert out[base.CUT] == [True, False]
    assert [len(ids) for ids in out["input_ids"][0]] == [lengths[0][0], 24]
