"""Document boundaries in language modeling: end-of-text between documents, and packing with per-document
positions and attention, held against each document run alone through plain transformers."""

from pathlib import Path

import numpy as np
import pytest
import torch
from reference import read_results
from runs import family_args
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from lit_hf.cli import main
from lit_hf.data.causal_lm_inputs import document_positions, tokenize_text


def test_positions_restart_at_documents_and_blocks() -> None:
    # Documents of 3, 0, 2 and 4 tokens in blocks of 4: the 2nd block starts inside the first document.
    got = document_positions(np.array([3, 0, 2, 4]), 4)
    assert got.tolist() == [0, 1, 2, 0, 0, 0, 1, 2, 0]


def test_eos_goes_after_every_row_with_tokens(gpt2_tokenizer) -> None:
    rows = {"text": ["Hello world", "", "Bye"]}
    got = tokenize_text(rows, tokenizer=gpt2_tokenizer, text_column="text", eos_token_id=50256)["input_ids"]
    assert got == [[15496, 995, 50256], [], gpt2_tokenizer("Bye")["input_ids"] + [50256]]


@pytest.fixture(scope="module")
def short_documents(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wikitext paragraphs cut to their first 12 words, separated by blank lines: several documents per block."""
    lines = [line for line in (data_dir / "wikitext/wikitext-2/valid.txt").read_text().splitlines() if len(line) > 80]
    path = tmp_path_factory.mktemp("docs") / "docs.txt"
    path.write_text("\n\n".join(" ".join(line.split()[:12]) for line in lines[:40]))
    return path


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory, gpt2_tokenizer) -> Path:
    """A tiny GPT-2 with wide random weights, so its predictions depend on the context it is allowed to see."""
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(gpt2_tokenizer), n_embd=32, n_layer=2, n_head=2, initializer_range=0.3)
    path = tmp_path_factory.mktemp("tiny-gpt2-wide")
    GPT2LMHeadModel(config).save_pretrained(path)
    gpt2_tokenizer.save_pretrained(path)
    return path


@torch.no_grad()
def reference_packed_loss(model_dir: Path, text: str, tokenizer, block_size: int) -> float:
    """Blank-line-separated documents, each + EOS, concatenated and cut into blocks; every document piece of a block
    run alone through the model; float64 NLL of the tokens predicted inside the piece."""
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokens, docs = [], []
    for number, document in enumerate(part for part in text.split("\n\n") if part):
        ids = tokenizer(document)["input_ids"] + [tokenizer.eos_token_id]
        tokens += ids
        docs += [number] * len(ids)
    nll, count = 0.0, 0
    for start in range(0, len(tokens) // block_size * block_size, block_size):
        block, owner = tokens[start : start + block_size], docs[start : start + block_size]
        for doc in dict.fromkeys(owner):
            piece = torch.tensor([t for t, d in zip(block, owner, strict=True) if d == doc])
            logp = model(input_ids=piece[None]).logits[0, :-1].double().log_softmax(-1)
            nll -= logp.gather(-1, piece[1:, None]).sum().item()
            count += len(piece) - 1
    return nll / count


def validate(tmp_path: Path, model_dir: Path, docs: Path, *extra: str) -> float:
    main(
        [
            "validate",
            *family_args("causal_lm"),
            "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
            f"--data.data_cache_dir={tmp_path / 'cache'}",
            f"--model.model_name_or_path={model_dir}",
            f"--data.validation_file={docs}",
            "--data.sample_by=paragraph",
            "--data.add_eos_between_documents=true",
            "--data.block_size=64",
            "--data.eval_batch_size=4",
            *extra,
        ]
    )
    return read_results(tmp_path)["val/loss"]


def test_packed_loss_equals_documents_run_alone(tmp_path, gpt2_dir, gpt2_tokenizer, short_documents) -> None:
    model_dir = gpt2_dir
    want = reference_packed_loss(model_dir, short_documents.read_text(), gpt2_tokenizer, 64)
    packed = validate(tmp_path / "packed", model_dir, short_documents, "--data.packing=true")
    assert packed == pytest.approx(want, rel=1e-5)
    joined = validate(tmp_path / "joined", model_dir, short_documents)  # the same blocks, attention across documents
    assert abs(joined - want) > 1e-2  # measured: 12.2397 joined, 12.30458435 reference, 12.30458432 packed


def test_packing_refuses_models_that_attend_across_documents(tmp_path, causal_lm_dir, short_documents, capsys) -> None:
    with pytest.raises(SystemExit):
        validate(tmp_path, causal_lm_dir("opt"), short_documents, "--data.packing=true")
    assert "packing=true needs a model that masks attention by position_ids; opt" in capsys.readouterr().err
