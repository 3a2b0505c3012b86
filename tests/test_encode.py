"""The fast token-id path (`encode_texts`) against the tokenizer's own call, on the real GPT-2, BERT and T5
tokenizers: the same ids for every row, whatever state the backend was left in."""

from pathlib import Path

import pytest
from transformers import BertTokenizer, GPT2Tokenizer, T5Tokenizer

from lit_hf.data import causal_lm_inputs as encode
from lit_hf.data.causal_lm_inputs import encode_texts

TOKENIZERS = {"gpt2": GPT2Tokenizer, "bert-base-uncased": BertTokenizer, "t5-small": T5Tokenizer}
ODD_ROWS = ["", " ", "\t\n", "<|endoftext|> a [SEP] b </s> <pad> [CLS]", "日本語のテキスト 🤗", "ab " * 600]


@pytest.fixture(scope="module")
def rows(data_dir: Path) -> list[str]:
    lines = (data_dir / "wikitext/wikitext-2/valid.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    return lines[:1500] + ODD_ROWS


@pytest.mark.parametrize("name", sorted(TOKENIZERS))
@pytest.mark.parametrize("split_special_tokens", [False, True])
def test_same_ids_as_the_tokenizer_call(data_dir: Path, rows: list[str], name: str, split_special_tokens: bool) -> None:
    def load():
        path = data_dir / "tokenizers" / name
        return TOKENIZERS[name].from_pretrained(path, split_special_tokens=split_special_tokens)

    expected = load()(rows, return_attention_mask=False, verbose=False)["input_ids"]
    tokenizer = load()
    assert encode._plain_rust_call(tokenizer)  # the fast path is the one under test
    tokenizer._tokenizer.enable_truncation(8)  # state an earlier call may have left: the tokenizer's call resets it
    tokenizer._tokenizer.enable_padding(length=600)
    assert encode_texts(tokenizer, rows) == expected
    assert len(expected[-1]) > 512  # untruncated


def test_a_tokenizer_with_its_own_call_is_called(data_dir: Path) -> None:
    class Shouting(GPT2Tokenizer):
        def __call__(self, text, **kwargs):
            return super().__call__([t.upper() for t in text], **kwargs)

    tokenizer = Shouting.from_pretrained(data_dir / "tokenizers" / "gpt2")
    assert not encode._plain_rust_call(tokenizer)
    assert encode_texts(tokenizer, ["hello"]) == [tokenizer._tokenizer.encode("HELLO").ids]
