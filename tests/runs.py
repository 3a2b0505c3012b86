"""What the tests share besides fixtures: the tiny models they save and each family's command line."""

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase, T5Config, T5ForConditionalGeneration


def save_tiny_t5(path: Path, tokenizer: PreTrainedTokenizerBase, **config: Any) -> Path:
    """A 2-layer, 32-wide T5 with random weights (seeded) and the tokenizer's vocabulary, saved as users have one.

    `decoder_start_token_id` and `n_positions` are google-t5/t5-small's; `config` changes any field (None removes
    one a test wants missing)."""
    torch.manual_seed(0)
    fields = {"d_model": 32, "d_ff": 64, "num_layers": 2, "num_heads": 2, "d_kv": 16, "vocab_size": len(tokenizer)}
    fields |= {"decoder_start_token_id": 0, "n_positions": 512} | config
    T5ForConditionalGeneration(T5Config(**{k: v for k, v in fields.items() if v is not None})).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


FAMILIES = {  # family -> (task, data module): the class paths users type after --model= and --data=
    "causal_lm": ("CausalLMTask", "LanguageModelingDataModule"),
    "text_classification": ("SequenceClassificationTask", "TextClassificationDataModule"),
    "translation": ("TranslationTask", "TranslationDataModule"),
    "summarization": ("SummarizationTask", "SummarizationDataModule"),
    "multiple_choice": ("MultipleChoiceTask", "MultipleChoiceDataModule"),
    "image_classification": ("ImageClassificationTask", "ImageClassificationDataModule"),
}


def family_args(family: str, model: Path | str | None = None) -> list[str]:
    """`--model=lit_hf.tasks.<Task>` (with `--model.model_name_or_path=<model>` when given) and
    `--data=lit_hf.data.<DataModule>` of the family: the first words of each of its command lines."""
    task, data = FAMILIES[family]
    path = [] if model is None else [f"--model.model_name_or_path={model}"]
    return [f"--model=lit_hf.tasks.{task}", *path, f"--data=lit_hf.data.{data}"]


def cpu_run(root: Path, cache: Path | None = None) -> list[str]:
    """A test run's place and machine: logs under `root`, tokenized data in `cache` (`root/cache` unless given), the
    CPU, no progress bar. After `family_args`: `--data.*` needs `--data=` first."""
    cache = root / "cache" if cache is None else cache
    return [
        f"--trainer.default_root_dir={root}",
        f"--data.data_cache_dir={cache}",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
    ]


def run_dir(root: Path) -> Path:
    """The newest run folder (`lightning_logs/<task>-<model>/version_N`) under `root`: the run a test just made, or
    the one a test's last `validate`/`test`/`predict` of its checkpoint wrote into (a folder changes when an entry
    is made in it; N alone does not order runs of different models)."""
    return max((root / "lightning_logs").glob("*/version_*"), key=lambda p: p.stat().st_mtime_ns)


def rows_of(path: Path) -> list[dict]:
    """The rows of a JSON-lines file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@contextmanager
def one_thread() -> Iterator[None]:
    """This process on one thread, as each child of a multi-process run is: a matmul's sums can depend on the threads,
    and lit_hf sets a process's threads from its cores unless OMP_NUM_THREADS is set (lit_hf/machine.py)."""
    threads, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp
