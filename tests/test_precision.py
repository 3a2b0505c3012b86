"""Every `--trainer.precision` runs every family on CPU with the metrics of 32-true; metric states keep float64."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import runs
import torch
import yaml
from jsonargparse import Namespace
from lightning.pytorch.plugins.precision import HalfPrecision
from reference import read_results
from torchmetrics import MeanMetric
from transformers import T5Tokenizer

from lit_hf.cli import main
from lit_hf.cli.lightning import what_runs
from lit_hf.data.seq2seq import TranslationDataModule
from lit_hf.data.seq2seq_inputs import collate_pairs
from lit_hf.machine import cpu_precision
from lit_hf.metrics import MetricStates
from lit_hf.options import HubOptions
from lit_hf.tasks import CausalLMTask, SequenceClassificationTask, TranslationTask

PRECISIONS = ["bf16-mixed", "16-mixed", "bf16-true", "16-true"]
# bf16 keeps 8 bits of mantissa: 1% (the bar); fp16 keeps 11, and runs as bf16 under 16-mixed on a CPU.
TOLERANCE = {"bf16-mixed": 0.01, "16-mixed": 0.01, "bf16-true": 0.01, "16-true": 0.005}


@pytest.fixture(autouse=True)
def native_bf16_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests compare bfloat16 kernels with float32 on any CPU: lit_hf's switch to float32 on a CPU without
    native bfloat16 (tested below) is taken out of their way."""
    monkeypatch.setattr("lit_hf.cli.lightning.cpu_flags", lambda: {"avx512_bf16"})


@pytest.fixture(scope="module")
def family_args(
    tmp_path_factory, data_dir: Path, causal_lm_dir, classifier_dir, tiny_t5_dir: Path
) -> dict[str, list[str]]:
    cache = f"--data.data_cache_dir={tmp_path_factory.mktemp('cache')}"  # tokenized once, read by every precision
    families = {
        "causal_lm": [
            *runs.family_args("causal_lm", causal_lm_dir('gpt2')),
            f"--data.validation_file={data_dir / 'wikitext/wiki_00'}",
            "--data.block_size=64", "--data.max_eval_samples=8", "--data.eval_batch_size=4",
        ],
        "classification": [
            *runs.family_args("text_classification", classifier_dir('bert', 2)),
            "--data.task_name=cola", f"--data.data_dir={data_dir / 'glue'}", "--data.max_eval_samples=96",
            "--data.eval_batch_size=8",
        ],
        "translation": [
            *runs.family_args("translation", tiny_t5_dir),
            f"--data.validation_file={data_dir / 'wmt16/sample.json'}",
            "--data.source_lang=en", "--data.target_lang=ro", "--data.max_target_length=12",
            "--data.eval_batch_size=4",
        ],
    }  # fmt: skip
    return {name: [*args, cache] for name, args in families.items()}


def validate(root: Path, args: list[str], precision: str) -> Path:
    main([
        "validate", *args, "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        f"--trainer.precision={precision}", f"--trainer.default_root_dir={root}",
    ])  # fmt: skip
    return root


@pytest.fixture(scope="module")
def full_precision(tmp_path_factory: pytest.TempPathFactory, family_args) -> dict[str, dict[str, float]]:
    root = tmp_path_factory.mktemp("fp32")
    return {name: read_results(validate(root / name, args, "32-true")) for name, args in family_args.items()}


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("family", ["causal_lm", "classification", "translation"])
def test_each_precision_gives_the_metrics_of_32_true(tmp_path, family_args, full_precision, family, precision, capsys):
    results = read_results(validate(tmp_path / "runs", family_args[family], precision))
    reference = full_precision[family]
    assert set(results) == set(reference)
    for key, value in reference.items():
        if key.endswith(("bleu", "chrf")):  # a random tiny model's hypotheses score ~0; lengths must still agree
            continue
        if precision.endswith("-true") and key.endswith(("matthews", "accuracy")):
            # An untrained head's two logits lie within bf16's rounding for many rows, so their argmax flips with
            # the CPU's bf16 kernels (an AVX2 CPU without native bf16 rounds otherwise than one with AVX-512 bf16);
            # the loss carries the precision check for this family.
            continue
        assert results[key] == pytest.approx(value, rel=TOLERANCE[precision]), key
    assert reference["val/loss"] > 1.0  # a real loss, not a degenerate one
    if precision == "16-mixed":  # a CPU has no fp16 autocast: said once, and config.yaml records what ran
        assert "runs as bf16-mixed" in capsys.readouterr().out
        (saved,) = (tmp_path / "runs").rglob("config.yaml")
        assert yaml.safe_load(saved.read_text())["trainer"]["precision"] == "bf16-mixed"


def test_t5_in_float16_warns_naming_bf16(tmp_path, family_args) -> None:
    with pytest.warns(UserWarning, match="float16 .16-true. overflows.*bf16-mixed"):
        validate(tmp_path / "runs", family_args["translation"], "16-true")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_metric_states_keep_float64_when_the_task_is_cast(
    family_args, causal_lm_dir, classifier_dir, tiny_t5_dir, dtype
):
    tasks = [
        CausalLMTask(str(causal_lm_dir("gpt2"))),
        SequenceClassificationTask(str(classifier_dir("bert")), glue_task="stsb", regression=True),  # list states
        TranslationTask(str(tiny_t5_dir)),
    ]
    for task in tasks:
        HalfPrecision("bf16-true" if dtype == torch.bfloat16 else "16-true").convert_module(task)  # what Lightning runs
        assert next(task.model.parameters()).dtype == dtype
        states = [getattr(m, name) for m in task.modules() if hasattr(m, "_defaults") for name in m._defaults]
        tensors = [t for s in states for t in (s if isinstance(s, list) else [s])]
        assert states and {t.dtype for t in tensors} <= {torch.float64, torch.int64}, type(task).__name__


def test_a_mean_over_4000_rows_stays_exact_under_bf16_true() -> None:
    """The issue's case: batches of 8 losses; a bf16 sum stops counting by 8 past 2,048 (1.000 instead of 0.692)."""
    holder = MetricStates({"loss": MeanMetric().set_dtype(torch.float64)}).to(torch.bfloat16)
    for _ in range(500):
        holder["loss"].update(torch.tensor(0.6931, dtype=torch.float64), weight=8)
    assert holder["loss"].compute().item() == pytest.approx(0.6931, rel=1e-12)


@pytest.mark.parametrize(("precision", "width"), [("bf16-mixed", 8), ("16-mixed", 8), ("32-true", 5), ("bf16-true", 5)])
def test_translation_batches_pad_to_a_multiple_of_8_under_mixed_precision(tiny_t5_dir, precision, width) -> None:
    hub = HubOptions(tokenizer_name=str(tiny_t5_dir))
    module = TranslationDataModule("en", "ro", hub=hub, validation_file="unused.json")
    module.trainer = SimpleNamespace(precision=precision)
    module.tokenizer = T5Tokenizer.from_pretrained(tiny_t5_dir)  # what setup loads; pad id 0
    collate = module.collate("validation")
    rows = [{"input_ids": [5, 6, 7, 8, 1], "attention_mask": [1] * 5, "labels": [9, 1], "index": 0}]
    batch = collate(rows + [{"input_ids": [5, 1], "attention_mask": [1, 1], "labels": [9, 9, 1], "index": 1}])
    assert batch["input_ids"].shape == (2, width) and batch["attention_mask"][:, 5:].sum() == 0
    assert (batch["input_ids"][:, 5:] == 0).all() and batch["labels"].shape[1] == (8 if width == 8 else 3)
    assert collate_pairs(rows, pad_token_id=0, label_pad_token_id=-100)["input_ids"].shape == (1, 5)


def test_bf16_on_a_cpu_without_it_runs_float32_saying_why(tmp_path, monkeypatch, family_args, full_precision, capsys):
    """An AVX2-only CPU (this machine's features, as /proc/cpuinfo lists them) emulates bfloat16 several times slower
    than float32: the run is float32's, to the last digit, said in one line and recorded in config.yaml."""
    monkeypatch.setattr("lit_hf.cli.lightning.cpu_flags", lambda: {"fma", "avx", "avx2"})
    precision = "bf16-mixed"
    results = read_results(validate(tmp_path / "runs", family_args["causal_lm"], precision))
    assert results == full_precision["causal_lm"]
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "precision" in line]
    assert line.startswith(f"lit_hf: --trainer.precision={precision} runs as 32-true: this CPU has no native bfloat16")
    (saved,) = (tmp_path / "runs").rglob("config.yaml")
    assert yaml.safe_load(saved.read_text())["trainer"]["precision"] == "32-true"


def test_bf16_on_a_cpu_without_it_is_refused_when_strict(tmp_path, monkeypatch, family_args, capsys) -> None:
    monkeypatch.setattr("lit_hf.cli.lightning.cpu_flags", lambda: {"avx2"})
    monkeypatch.setenv("LIT_HF_STRICT_PRECISION", "1")
    with pytest.raises(SystemExit) as exit_info:
        validate(tmp_path / "runs", family_args["causal_lm"], "bf16-mixed")
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("lit_hf: error: --trainer.precision=bf16-mixed: this CPU has no native bfloat16")
    assert not (tmp_path / "runs").exists()  # refused before anything was built or written


def test_bf16_stays_on_a_gpu_and_on_a_cpu_with_it() -> None:
    """Only a CPU run without native bfloat16 changes: `--trainer.accelerator=gpu` keeps what was asked."""
    gpu = Namespace(accelerator="gpu", precision="bf16-mixed", strategy="auto")
    what_runs(gpu)
    assert gpu.precision == "bf16-mixed"
    for flags in ({"avx512_bf16"}, {"amx_bf16", "avx2"}, {"bf16", "asimd"}):  # AVX512-BF16, AMX, Arm's BF16
        assert cpu_precision("bf16-true", flags, strict=True) == "bf16-true"
    assert cpu_precision("32-true", {"avx2"}, strict=True) == "32-true"
    assert cpu_precision("bf16-true", {"avx2"}, strict=False) == "32-true"
