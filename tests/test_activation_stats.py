"""Activation statistics (`lit_hf.ActivationStatistics`): every family's blocks, numbers equal to a plain forward hook
in numpy, padding left out, a torchao-quantized model, 1 process equal to 3, the CLI on a quickstart config."""

import csv
import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from reference import REPO, run_lit_hf
from runs import cpu_run, family_args, run_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForMultipleChoice,
    GPT2Config,
    GPT2LMHeadModel,
    ResNetConfig,
    ResNetForImageClassification,
    T5Config,
    T5ForConditionalGeneration,
)

import lit_hf
import lit_hf.activation_stats
from lit_hf.activation_stats import block_names
from lit_hf.cli import main
from lit_hf.errors import ConfigError

EDGES = np.linspace(-16.0, 16.0, 129)  # the callback's default histogram: 128 bins over [-16, 16)


def reference_stats(examples: list[np.ndarray], sigmas: float = 6.0) -> dict:
    """Statistics of every value of every example (each one array of its counted values), in float64 numpy."""
    values = np.concatenate([e.ravel() for e in examples]).astype(np.float64)
    mean, std = values.mean(), values.std()
    inside, _ = np.histogram(values[(values >= EDGES[0]) & (values < EDGES[-1])], bins=EDGES)
    outliers = sum(int((np.abs(e) > sigmas * e.astype(np.float64).std()).sum()) for e in examples)
    return {
        "count": values.size,
        "min": values.min(),
        "max": values.max(),
        "absmax": np.abs(values).max(),
        "mean": mean,
        "std": std,
        "kurtosis": ((values - mean) ** 4).mean() / std**4,
        "outliers": outliers,
        "histogram": [int((values < EDGES[0]).sum()), *inside.tolist(), int((values >= EDGES[-1]).sum())],
    }


def read_stats(run_dir: Path) -> dict[str, dict]:
    document = json.loads((run_dir / "activation_stats.json").read_text())
    return {row["module"]: row for row in document["statistics"]}


def assert_close(stats: dict, reference: dict, rel: float) -> None:
    assert stats["count"] == reference["count"]
    for key in ("min", "max", "absmax", "std", "kurtosis"):
        assert stats[key] == pytest.approx(reference[key], rel=rel, abs=1e-300), key
    assert stats["mean"] == pytest.approx(reference["mean"], abs=rel * reference["std"])  # after a norm it is ~0


def test_blocks_are_found_in_every_familys_models():
    torch.manual_seed(0)
    bert = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    t5 = T5Config(vocab_size=99, d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16)
    resnet = ResNetConfig.from_pretrained(REPO / "configs/quickstart/resnet-tiny")
    gpt2 = GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=2)
    assert block_names(GPT2LMHeadModel(gpt2)) == ["transformer.h.0", "transformer.h.1"]
    assert block_names(BertForMultipleChoice(bert)) == ["bert.encoder.layer.0", "bert.encoder.layer.1"]
    assert block_names(T5ForConditionalGeneration(t5)) == [
        *("encoder.block.0", "encoder.block.1", "decoder.block.0", "decoder.block.1")
    ]
    assert block_names(ResNetForImageClassification(resnet)) == [f"resnet.encoder.stages.{i}" for i in range(4)]


def test_impossible_options_are_refused():
    with pytest.raises(ConfigError, match="pattern"):
        lit_hf.ActivationStatistics(modules="outputs")
    with pytest.raises(ConfigError, match="histogram_range"):
        lit_hf.ActivationStatistics(histogram_range=(1.0, -1.0))


def test_padded_batches_equal_a_plain_forward_hook_without_padding(tmp_path, classifier_dir):
    """The CLI's padded batches (10 texts of 1 to 40 words, batches of 5) give the statistics of one unpadded
    forward per text: padding tokens are not counted (with them the counts differ)."""
    model_dir = classifier_dir("bert", 2)
    texts = [" ".join(["word"] * (1 + 4 * i)) + f" number {i}" for i in range(10)]
    rows = "".join(f"{t},{'ab'[i % 2]}\n" for i, t in enumerate(texts))
    (tmp_path / "val.csv").write_text("text,label\n" + rows)
    main(
        [
            "validate",
            *family_args("text_classification", model_dir),
            *cpu_run(tmp_path),
            f"--data.validation_file={tmp_path / 'val.csv'}",
            "--data.eval_batch_size=5",
            "--trainer.callbacks+=lit_hf.ActivationStatistics",
        ]
    )
    stats = read_stats(next((tmp_path / "lightning_logs").glob("*/version_*")))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    outputs: dict[str, list[np.ndarray]] = {f"bert.encoder.layer.{i}": [] for i in range(2)}
    for name, values in outputs.items():  # a block returns its hidden states (1, tokens, 32), alone or first
        hook = lambda m, a, out, v=values: v.append((out[0] if isinstance(out, tuple) else out)[0].numpy())  # noqa: E731
        model.get_submodule(name).register_forward_hook(hook)
    with torch.no_grad():
        for text in texts:
            model(**tokenizer(text, truncation=True, max_length=128, return_tensors="pt"))
    assert set(stats) == set(outputs)
    for name, values in outputs.items():
        reference = reference_stats(values)
        assert_close(stats[name], reference, rel=1e-5)  # padded and unpadded attention differ by rounding
        assert stats[name]["outliers"] == reference["outliers"]
        assert np.abs(np.subtract(stats[name]["histogram"], reference["histogram"])).sum() <= 2


class Evaluate(L.LightningModule):
    """A model evaluated on given batches: what a task's validation does, without its metrics."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.model(**batch)


def callback_stats(model: torch.nn.Module, batches: list[dict], tmp_path: Path, **options) -> dict[str, dict]:
    trainer = L.Trainer(
        accelerator="cpu", default_root_dir=tmp_path, callbacks=[lit_hf.ActivationStatistics(**options)],
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.validate(Evaluate(model), torch.utils.data.DataLoader(batches, batch_size=None))
    return read_stats(Path(trainer.log_dir))


def hooked_values(model: torch.nn.Module, batches: list[dict], names: list[str]) -> dict[str, list[np.ndarray]]:
    """Each named Linear's input per example, from forward pre-hooks on a plain forward."""
    values: dict[str, list[np.ndarray]] = {name: [] for name in names}
    handles = [
        model.get_submodule(name).register_forward_pre_hook(lambda m, args, v=values[name]: v.extend(args[0].numpy()))
        for name in names
    ]
    with torch.no_grad():
        for batch in batches:
            model(**batch)
    for handle in handles:
        handle.remove()
    return values


def test_a_torchao_quantized_model_is_measured_as_quantized(tmp_path, classifier_dir):
    """int8 weight-only (torchao, applied by hand): the inputs of the layers after a quantized one are the quantized
    model's, equal to plain hooks on it and unlike the full-precision model's."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    model = AutoModelForSequenceClassification.from_pretrained(classifier_dir("bert", 2)).eval()
    torch.manual_seed(0)
    batches = [{"input_ids": torch.randint(5, 99, (4, 12))} for _ in range(3)]
    names = ["bert.encoder.layer.1.attention.self.query", "bert.encoder.layer.1.output.dense", "classifier"]
    full = hooked_values(model, batches, names)
    quantize_(model, Int8WeightOnlyConfig())
    assert type(model.get_submodule(names[1]).weight).__name__ != "Parameter"  # torchao's int8 tensor
    quantized = hooked_values(model, batches, names)
    stats = callback_stats(model, batches, tmp_path, modules="linear_inputs", pattern="layer.1|classifier")
    for name in names:
        reference = reference_stats(quantized[name])
        assert_close(stats[name], reference, rel=1e-12)
        assert stats[name]["histogram"] == reference["histogram"]
        assert stats[name]["outliers"] == reference["outliers"]
        assert abs(stats[name]["mean"] / reference_stats(full[name])["mean"] - 1) > 1e-6  # quantization shows


class Passes(torch.nn.Module):
    """Two blocks that pass the given hidden states on: their outputs are values the test chose."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList([torch.nn.Identity(), torch.nn.Identity()])

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            inputs_embeds = layer(inputs_embeds)
        return inputs_embeds


@pytest.mark.parametrize("padded", [True, False])
@pytest.mark.parametrize("unit, threshold", [("sigma", 6.0), ("absolute", 3.0)])
def test_outliers_counted_per_example_equal_numpys(tmp_path, padded, unit, threshold):
    """Heavy-tailed values with outliers planted in some examples (and padding of 1000, never counted): outliers,
    histogram, min and max equal numpy's, per example's std for sigma; with padding and without (one row per
    example then)."""
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(2):
        values = torch.randn(4, 10, 16, generator=generator) * torch.rand(4, 10, 1, generator=generator) * 2
        values[0, 2, :2], values[1, 3, 5], values[2, 0, :3], values[3, 0, 0] = 30.0, 40.0, -25.0, 9.0
        lengths = torch.tensor([10, 7, 4, 1])
        mask = (torch.arange(10) < lengths[:, None]).long()
        values[mask == 0] = 1000.0 if padded else values[mask == 0]
        batches.append({"inputs_embeds": values} | ({"attention_mask": mask} if padded else {}))
    stats = callback_stats(Passes(), batches, tmp_path, outlier_unit=unit, outlier_threshold=threshold)
    examples = [
        (b["inputs_embeds"][e][b["attention_mask"][e].bool()] if padded else b["inputs_embeds"][e]).numpy()
        for b in batches
        for e in range(4)
    ]
    reference = reference_stats(examples, threshold)
    if unit == "absolute":
        reference["outliers"] = int((np.abs(np.concatenate([e.ravel() for e in examples])) > threshold).sum())
    assert reference["outliers"] >= 6 and reference["histogram"][-1] > 0  # 30 and 40 past 6 sigma, twice
    for name in ("layers.0", "layers.1"):
        assert_close(stats[name], reference, rel=1e-12)
        assert stats[name]["outliers"] == reference["outliers"]
        assert stats[name]["histogram"] == reference["histogram"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("low, high, bins", [(-16.0, 16.0, 128), (-16.0, 16.0, 16), (-3.0, 3.0, 10), (0.0, 1.0, 1024)])
def test_bins_equal_a_search_in_the_float64_edges(low, high, bins, dtype):
    """Each value's bin (below, each bin, at or above the end) equals numpy's search in the edges `low + i * width`,
    for values on the edges, next to them, tiny (subnormal, signed zeros), huge and infinite: the fast exact path
    (a width of 1/2^k) and the general one (a width of 2 or 0.6)."""
    edges = low + np.arange(bins + 1) * ((high - low) / bins)
    tiny = np.finfo(np.float32).smallest_subnormal
    values = np.concatenate(
        [edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf), [tiny, -tiny, 0.0, -0.0, 1e-30, -1e-30]]
        + [[np.inf, -np.inf, 1e30, -1e30], np.random.default_rng(0).normal(0, 8, 1000)]
    )
    values = torch.from_numpy(values).to(dtype)
    indices = lit_hf.activation_stats.Bins.of(low, high, bins).indices(values, values.double())
    expected = np.searchsorted(edges, values.double().numpy(), side="right")
    np.testing.assert_array_equal(indices.long().numpy(), expected)


def test_three_processes_equal_one(tmp_path, data_dir, causal_lm_dir):
    """12 blocks of 64 tokens in batches of 2: 6 batches on one process, 2 on each of three. Counts, histograms,
    outliers, min and max bitwise equal; float64 moments to 1e-12 relative."""
    args = [
        *family_args("causal_lm", causal_lm_dir("gpt2")),
        f"--data.validation_file={data_dir / 'wikitext/wiki_00'}",
        "--data.block_size=64",
        "--data.max_eval_samples=12",
        "--data.eval_batch_size=2",
        "--trainer.callbacks+=lit_hf.ActivationStatistics",
        "--trainer.callbacks.modules=linear_inputs",
    ]
    main(["validate", *args, *cpu_run(tmp_path / "one", tmp_path / "cache")])
    three = [*cpu_run(tmp_path / "three", tmp_path / "cache"), "--trainer.devices=3", "--trainer.strategy=ddp"]
    run_lit_hf("validate", *args, *three)
    one, three = (read_stats(run_dir(tmp_path / name)) for name in ("one", "three"))
    assert list(one) == list(three) and "lm_head" in one and "transformer.h.1.mlp.c_proj" in one
    for name, row in one.items():
        assert row["count"] == 12 * 64 * (128 if name.endswith("c_proj") and "mlp" in name else 32)
        for key in ("count", "outliers", "histogram", "min", "max", "absmax"):
            assert three[name][key] == row[key], (name, key)
        for key in ("mean", "std", "kurtosis"):
            assert three[name][key] == pytest.approx(row[key], rel=1e-12), (name, key)


def test_cli_on_the_quickstart_config_logs_and_writes_tables(tmp_path):
    main(
        [
            "validate",
            f"--config={REPO / 'configs/quickstart_clm.yaml'}",
            f"--trainer.default_root_dir={tmp_path}",
            f"--data.data_cache_dir={tmp_path / 'cache'}",
            "--trainer.limit_val_batches=2",
            "--trainer.enable_progress_bar=false",
            "--trainer.callbacks+=lit_hf.ActivationStatistics",
            "--trainer.callbacks.bins=16",
        ]
    )
    (run_dir,) = (tmp_path / "lightning_logs").glob("*/version_0")
    assert (run_dir / "results.json").exists()
    document = json.loads((run_dir / "activation_stats.json").read_text())
    assert len(document["histogram_edges"]) == 17
    table = list(csv.DictReader((run_dir / "activation_stats.csv").open()))
    assert [row["module"] for row in table] == ["transformer.h.0", "transformer.h.1"]
    assert int(table[0]["count"]) == 2 * 16 * 128 * 64  # 2 batches of 16 blocks of 128 tokens, 64 wide
    events = EventAccumulator(str(run_dir), size_guidance={"histograms": 0})
    events.Reload()
    assert "activations/transformer.h.1" in events.Tags()["histograms"]
    assert "activations/transformer.h.1/kurtosis" in events.Tags()["scalars"]


def test_a_second_evaluation_writes_new_tables_and_a_model_without_blocks_is_refused(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    batches = [{"input": torch.randn(2, 4)}]
    trainer = L.Trainer(
        accelerator="cpu", default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[lit_hf.ActivationStatistics(modules="linear_inputs")],
    )  # fmt: skip
    for _ in range(2):
        trainer.validate(Evaluate(model), torch.utils.data.DataLoader(batches, batch_size=None))
    run_dir = Path(trainer.log_dir)
    assert (run_dir / "activation_stats.json").exists() and (run_dir / "activation_stats-1.csv").exists()
    second = json.loads((run_dir / "activation_stats-1.json").read_text())["statistics"]
    assert second == list(read_stats(run_dir).values()) and second[0]["count"] == 8  # the same batch, measured again
    with pytest.raises(ConfigError, match="no blocks"):
        L.Trainer(accelerator="cpu", logger=False, callbacks=[lit_hf.ActivationStatistics()]).validate(
            Evaluate(model), torch.utils.data.DataLoader(batches, batch_size=None)
        )
