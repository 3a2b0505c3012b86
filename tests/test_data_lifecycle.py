"""The lifecycle every data module shares (lit_hf/data/base.py): cache folders named after the family, options that
read the model's config decided once per run, and a shared tokenizer left as it is."""

from pathlib import Path

import pytest

import lit_hf.data.base as base
import lit_hf.data.causal_lm as causal_lm
import lit_hf.data.seq2seq_inputs as seq2seq_inputs
from lit_hf.data import LanguageModelingDataModule, SummarizationDataModule, TranslationDataModule
from lit_hf.errors import LitHFError
from lit_hf.options import HubOptions


def test_cache_folders_are_named_after_the_family(
    tmp_path: Path, data_dir: Path, causal_lm_dir, tiny_t5_dir: Path
) -> None:
    """One name per family: a cache folder of an older name (`clm-...`, `translation-...`) is never read."""
    t5 = HubOptions(tokenizer_name=str(tiny_t5_dir))
    gpt2 = HubOptions(tokenizer_name=str(causal_lm_dir("gpt2")))
    common = {"data_cache_dir": str(tmp_path), "validation_file": str(data_dir / "wikitext/wiki_00")}
    clm = LanguageModelingDataModule(hub=gpt2, **common).caches("validate")
    pairs = {"data_cache_dir": str(tmp_path), "validation_file": str(data_dir / "wmt16/sample.json")}
    translation = TranslationDataModule("en", "ro", hub=t5, **pairs).caches("validate")
    summarization = SummarizationDataModule(hub=t5, **pairs).caches("validate")
    assert clm["validation"][0].name.startswith("causal_lm-")
    assert translation["validation"][0].name.startswith("seq2seq-")
    assert summarization["validation"][0].name.startswith("seq2seq-")
    assert translation["validation"][0] != summarization["validation"][0]  # one family, two tasks: two caches
    assert {key["format"] for _, key in [*clm.values(), *translation.values()]} == {3}


def test_block_size_is_decided_once_per_run(tmp_path: Path, data_dir: Path, causal_lm_dir, monkeypatch) -> None:
    """prepare_data, setup and the training loader all need the block size; it is worked out (from the tokenizer's
    and the model config's limits) once."""
    decided, capped_length = [], causal_lm.capped_length
    monkeypatch.setattr(causal_lm, "capped_length", lambda *args: decided.append(args) or capped_length(*args))
    dm = LanguageModelingDataModule(
        model_name_or_path=str(causal_lm_dir("gpt2")),
        train_file=str(data_dir / "wikitext/wiki_00"),
        validation_split_percentage=0,
        data_cache_dir=str(tmp_path),
    )
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[1] == dm.block_size == 128  # the tiny GPT-2's 128 positions
    assert len(decided) == 1


def test_language_codes_are_set_on_a_copy_not_on_the_shared_tokenizer(
    tmp_path: Path, data_dir: Path, tiny_t5_dir: Path, monkeypatch
) -> None:
    """A multilingual tokenizer needs its language codes; the tokenizer the task also holds is not changed."""
    monkeypatch.setattr(seq2seq_inputs, "MULTILINGUAL_TOKENIZERS", ("T5Tokenizer",))  # as if T5's were one
    options = {"validation_file": str(data_dir / "wmt16/sample.json"), "data_cache_dir": str(tmp_path)}
    dm = TranslationDataModule("en", "ro", str(tiny_t5_dir), src_lang="en_XX", tgt_lang="ro_RO", **options)
    dm.prepare_data()
    dm.setup("validate")
    shared = base.linked_tokenizer(str(tiny_t5_dir), HubOptions())
    assert shared is dm.tokenizer
    assert getattr(shared, "src_lang", None) is None and getattr(shared, "tgt_lang", None) is None
    assert len(dm.datasets["validation"]) == 10
    with pytest.raises(LitHFError, match="src_lang"):  # without the codes: the one error line
        TranslationDataModule("en", "ro", str(tiny_t5_dir), **options).prepare_data()
