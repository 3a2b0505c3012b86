"""Shared fixtures: the real data in ../shared/data and tiny models built from configs with real tokenizers."""

import os
import tempfile
from pathlib import Path

# Before transformers/datasets are imported: they read these once. A private cache keeps runs independent.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LIT_HF_NO_HELP_CACHE", "1")  # `--help` in tests builds its text; tests/test_cli_help.py
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="lit_hf-test-datasets-"))

import pytest
import torch
from runs import save_tiny_t5
from transformers import (
    BloomConfig,
    BloomForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2Tokenizer,
    OPTConfig,
    OPTForCausalLM,
    T5Tokenizer,
)

REPO = Path(__file__).resolve().parents[1]
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # a worker of `pytest -n` (pyproject's addopts)
    # The workers share the cores: each computes, and the processes its tests start, on its share. Two processes
    # of two threads each on two cores would spin-wait for each other.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, CORES // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
# The files that run longest (CI's slowest tests), started first so the workers finish together; the rest follow
# in their usual order. xdist hands out whole files (`--dist loadfile`: module fixtures are built once).
LONGEST_FIRST = (
    "test_resume.py",
    "test_scaling.py",
    "test_streaming.py",
    "test_sharding.py",
    "test_distributed.py",
    "test_ddp_training.py",
)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker per core, at most 4, since a worker's test starts up to 3 processes of about 1 GB."""
    return max(1, min(CORES, 4))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: tests keep their order within a file


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """../shared/data, or $LIT_HF_TEST_DATA. Missing data fails under CI and skips elsewhere."""
    path = Path(os.environ.get("LIT_HF_TEST_DATA", REPO.parent / "shared" / "data"))
    if not (path / "SOURCES.md").exists():
        message = f"test data not found at {path}; set LIT_HF_TEST_DATA"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def gpt2_tokenizer(data_dir: Path) -> GPT2Tokenizer:
    return GPT2Tokenizer.from_pretrained(data_dir / "tokenizers" / "gpt2")


def tiny_causal_lm(kind: str, vocab_size: int, positions: int = 128):
    """A 2-layer, 32-wide model of the given family with random weights (seeded)."""
    import torch

    torch.manual_seed(0)
    if kind == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=positions))
    if kind == "opt":
        config = OPTConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            ffn_dim=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=positions,
            word_embed_proj_dim=32,
        )
        return OPTForCausalLM(config)
    if kind == "bloom":
        return BloomForCausalLM(BloomConfig(vocab_size=vocab_size, hidden_size=32, n_layer=2, n_head=2))
    raise ValueError(kind)


@pytest.fixture(scope="session")
def causal_lm_dir(tmp_path_factory: pytest.TempPathFactory, gpt2_tokenizer: GPT2Tokenizer):
    """Factory: kind -> a saved model directory (weights, config, GPT-2 tokenizer), loaded as users would."""
    made: dict[str, Path] = {}

    def make(kind: str = "gpt2") -> Path:
        if kind not in made:
            path = tmp_path_factory.mktemp(f"tiny-{kind}")
            tiny_causal_lm(kind, len(gpt2_tokenizer)).save_pretrained(path)
            gpt2_tokenizer.save_pretrained(path)
            made[kind] = path
        return made[kind]

    return make


@pytest.fixture(scope="session")
def bert_tokenizer(data_dir: Path):
    from transformers import BertTokenizer

    return BertTokenizer.from_pretrained(data_dir / "tokenizers" / "bert-base-uncased")


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory, bert_tokenizer, gpt2_tokenizer):
    """Factory: (kind, num_labels) -> a saved tiny model directory with its tokenizer, loaded as users would.

    num_labels=None saves the bare encoder (like a pretrained base model: no head); a number saves a
    classification head of that size with seeded weights (like a fine-tuned checkpoint).
    """
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertModel,
        GPT2ForSequenceClassification,
        GPT2Model,
    )

    made: dict[tuple[str, int | None], Path] = {}

    def make(kind: str = "bert", num_labels: int | None = None) -> Path:
        import torch

        if (kind, num_labels) not in made:
            torch.manual_seed(0)
            tokenizer = bert_tokenizer if kind == "bert" else gpt2_tokenizer
            if kind == "bert":
                config = BertConfig(
                    vocab_size=len(tokenizer),
                    hidden_size=32,
                    num_hidden_layers=2,
                    num_attention_heads=2,
                    intermediate_size=64,
                    max_position_embeddings=128,
                )
                head, bare = BertForSequenceClassification, BertModel
            else:
                config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=128)
                config.pad_token_id = tokenizer.eos_token_id
                head, bare = GPT2ForSequenceClassification, GPT2Model
            if num_labels is not None:  # a "fine-tuned" head: wide weights, so predictions differ between inputs
                config.num_labels, config.initializer_range = num_labels, 0.5
            model = bare(config) if num_labels is None else head(config)
            path = tmp_path_factory.mktemp(f"tiny-{kind}-cls")
            model.save_pretrained(path)
            tokenizer.save_pretrained(path)
            made[(kind, num_labels)] = path
        return made[(kind, num_labels)]

    return make


@pytest.fixture(scope="session")
def nodrop_gpt2_dir(tmp_path_factory: pytest.TempPathFactory, gpt2_tokenizer) -> Path:
    """A tiny GPT-2 without dropout, so runs that see the same batches train to the same weights (compiled and
    eager too: inductor draws dropout masks from its own generator)."""
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(gpt2_tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=128)
    config.update({"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0})
    path = tmp_path_factory.mktemp("tiny-gpt2-nodrop")
    GPT2LMHeadModel(config).save_pretrained(path)
    gpt2_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def t5_tokenizer(data_dir: Path) -> T5Tokenizer:
    return T5Tokenizer.from_pretrained(data_dir / "tokenizers" / "t5-small")


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory: pytest.TempPathFactory, t5_tokenizer: T5Tokenizer) -> Path:
    """`runs.save_tiny_t5`: a 2-layer, 32-wide T5 with random weights (seeded) and the real t5-small tokenizer."""
    return save_tiny_t5(tmp_path_factory.mktemp("tiny-t5"), t5_tokenizer)


@pytest.fixture(scope="session")
def trained_gpt2_dir(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, gpt2_tokenizer) -> Path:
    """A 2-layer, 32-wide GPT-2 (128 positions, no dropout) with the real GPT-2 vocabulary, trained for 60 steps of
    2 blocks of 64 tokens of wiki_00 less its held-out lines (`reference.wiki_00_held_out`): peaked predictions,
    unlike random weights, so a wrong context or a wrong token shows in the perplexity."""
    from reference import HELD_OUT_LINES

    lines = (data_dir / "wikitext" / "wiki_00").read_text(encoding="utf-8").splitlines(keepends=True)
    ids = gpt2_tokenizer("".join(lines[:-HELD_OUT_LINES]))["input_ids"]
    blocks = torch.tensor(ids[: len(ids) // 64 * 64]).view(-1, 64)  # (203, 64)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(gpt2_tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=128)
    config.update({"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0})
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(60):
        batch = blocks[torch.randint(0, len(blocks), (2,))]
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    path = tmp_path_factory.mktemp("trained-gpt2")
    model.save_pretrained(path)
    gpt2_tokenizer.save_pretrained(path)
    return path
