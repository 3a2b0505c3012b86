"""The language-modeling data module: grouping against a reference, the cache, splits and error cases."""

from pathlib import Path

import numpy as np
import pytest
import torch
from reference import reference_blocks

import lit_hf.data.causal_lm_inputs as lm_inputs
from lit_hf.data import LanguageModelingDataModule
from lit_hf.data.cache import tokenizer_identity
from lit_hf.errors import ConfigError, LitHFError
from lit_hf.options import HubOptions


def make_dm(tmp_path: Path, tokenizer_dir: Path, **kwargs) -> LanguageModelingDataModule:
    return LanguageModelingDataModule(
        hub=HubOptions(tokenizer_name=str(tokenizer_dir)), data_cache_dir=str(tmp_path / "cache"), **kwargs
    )


def prepared(dm: LanguageModelingDataModule, stage: str = "fit") -> LanguageModelingDataModule:
    dm.prepare_data()
    dm.setup(stage)
    return dm


def test_blocks_equal_reference_grouping(tmp_path, data_dir, causal_lm_dir, gpt2_tokenizer):
    valid = data_dir / "wikitext" / "wikitext-2" / "valid.txt"
    dm = prepared(make_dm(tmp_path, causal_lm_dir("gpt2"), validation_file=str(valid), block_size=100), "validate")
    expected = reference_blocks(valid, gpt2_tokenizer, 100)
    got = np.stack(dm.datasets["validation"]["input_ids"])
    assert got.shape == expected.shape and got.shape[0] > 2000
    np.testing.assert_array_equal(got, expected)
    batch = next(iter(dm.val_dataloader()))
    assert batch["input_ids"].dtype == torch.long and torch.equal(batch["labels"], batch["input_ids"])


def test_default_block_size_is_capped_by_model_positions(tmp_path, data_dir, causal_lm_dir):
    model_dir = causal_lm_dir("gpt2")  # 128 positions; the GPT-2 tokenizer has no limit of its own here
    dm = LanguageModelingDataModule(
        str(model_dir), train_file=str(data_dir / "wikitext/wiki_00"), data_cache_dir=str(tmp_path / "cache")
    )
    prepared(dm)
    assert dm.datasets["train"][0]["input_ids"].shape == (128,)


def test_validation_carved_from_train(tmp_path, data_dir, causal_lm_dir):
    dm = make_dm(
        tmp_path,
        causal_lm_dir("gpt2"),
        train_file=str(data_dir / "wikitext/wiki_00"),
        block_size=64,
        validation_split_percentage=10,
    )
    prepared(dm)
    n_train, n_val = len(dm.datasets["train"]), len(dm.datasets["validation"])
    assert n_val > 0 and n_train > 5 * n_val


def test_cache_reused_and_keyed_by_options(tmp_path, data_dir, causal_lm_dir, monkeypatch):
    kwargs = {"validation_file": str(data_dir / "wikitext/wiki_00"), "block_size": 64}
    first = prepared(make_dm(tmp_path, causal_lm_dir("gpt2"), **kwargs), "validate")

    def fail(*args, **kwargs):
        raise AssertionError("tokenized again although the cache holds the result")

    monkeypatch.setattr(lm_inputs, "tokenize_text", fail)
    second = prepared(make_dm(tmp_path, causal_lm_dir("gpt2"), **kwargs), "validate")
    np.testing.assert_array_equal(
        np.stack(second.datasets["validation"]["input_ids"]), np.stack(first.datasets["validation"]["input_ids"])
    )
    with pytest.raises(AssertionError, match="tokenized again"):  # another block size is another key
        prepared(make_dm(tmp_path, causal_lm_dir("gpt2"), **{**kwargs, "block_size": 32}), "validate")
    with pytest.raises(AssertionError, match="tokenized again"):
        prepared(make_dm(tmp_path, causal_lm_dir("gpt2"), **kwargs, overwrite_cache=True), "validate")


def test_csv_json_and_saved_sources(tmp_path, causal_lm_dir):
    import datasets

    rows = [{"body": f"sentence number {i} is here."} for i in range(200)]
    datasets.Dataset.from_list(rows).to_json(tmp_path / "t.jsonl")
    datasets.Dataset.from_list(rows).to_csv(tmp_path / "t.csv")
    datasets.DatasetDict({"validation": datasets.Dataset.from_list(rows)}).save_to_disk(tmp_path / "saved")
    lengths = set()
    for source in (
        {"validation_file": str(tmp_path / "t.jsonl")},
        {"validation_file": str(tmp_path / "t.csv")},
        {"dataset_path": str(tmp_path / "saved")},
    ):
        dm = prepared(make_dm(tmp_path, causal_lm_dir("gpt2"), text_column="body", block_size=16, **source), "validate")
        lengths.add(len(dm.datasets["validation"]))
    assert len(lengths) == 1 and lengths.pop() > 50


def test_dataset_name_path_through_load_dataset(tmp_path, data_dir, causal_lm_dir):
    """`dataset_name` goes through `datasets.load_dataset`, as a hub id would; here a local dataset folder."""
    folder = tmp_path / "my_corpus"
    folder.mkdir()
    (folder / "train.txt").write_text((data_dir / "wikitext/wiki_00").read_text())
    dm = prepared(make_dm(tmp_path, causal_lm_dir("gpt2"), dataset_name=str(folder), block_size=64))
    assert len(dm.datasets["train"]) > 10 * len(dm.datasets["validation"]) > 0  # 5 % carved for validation


def test_validate_needs_only_its_split(tmp_path, data_dir, causal_lm_dir):
    from types import SimpleNamespace

    dm = make_dm(tmp_path, causal_lm_dir("gpt2"), validation_file=str(data_dir / "wikitext/wiki_00"), block_size=64)
    dm.trainer = SimpleNamespace(state=SimpleNamespace(fn="validate"))  # what Trainer.validate sets
    prepared(dm, "validate")
    assert set(dm.datasets) == {"validation"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train_file": "missing.txt"}, "train_file 'missing.txt' does not exist"),
        ({"validation_file": "VALID", "text_column": "nope"}, "no column 'nope'"),
        ({"validation_file": "EMPTY"}, "empty"),
        ({"validation_file": "VALID", "block_size": 100000}, "fewer than one block of 100000"),
        ({"validation_file": "BAD.json"}, "could not be read as json"),
    ],
)
def test_errors_name_the_problem(tmp_path, data_dir, causal_lm_dir, kwargs, message):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "bad.json").write_text("{not json")
    paths = {
        "VALID": str(data_dir / "wikitext/wiki_00"),
        "EMPTY": str(tmp_path / "empty.txt"),
        "BAD.json": str(tmp_path / "bad.json"),
    }
    kwargs = {k: paths.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}
    dm = make_dm(tmp_path, causal_lm_dir("gpt2"), **kwargs)
    with pytest.raises(LitHFError, match=message):
        prepared(dm, "validate" if "validation_file" in kwargs else "fit")


def test_constructor_rejects_contradictions(tmp_path):
    with pytest.raises(ConfigError, match="data source"):
        LanguageModelingDataModule(model_name_or_path="x")
    with pytest.raises(ConfigError, match="not both"):
        LanguageModelingDataModule(model_name_or_path="x", dataset_path="d", train_file="t.txt")


def test_tokenizer_identity_ignores_call_state_but_not_the_vocabulary(gpt2_tokenizer):
    """A call with truncation/padding leaves them set in the fast backend; a new token changes the ids."""
    from transformers import GPT2TokenizerFast

    fast = GPT2TokenizerFast.from_pretrained(gpt2_tokenizer.name_or_path)
    fast.pad_token = fast.eos_token
    before = tokenizer_identity(fast)
    fast("hello world " * 50, truncation=True, max_length=8, padding="max_length")
    assert fast.backend_tokenizer.truncation is not None  # the state the identity must not see
    assert tokenizer_identity(fast) == before
    fast.add_tokens(["<new-token>"])
    assert tokenizer_identity(fast) != before
