"""Post-training quantization: metrics against torchao applied by hand, coverage, Conv1D, every family, errors."""

import json
import math
import sys
from copy import deepcopy
from pathlib import Path

import numpy as np
import pytest
import torch
from reference import REPO, read_results, reference_blocks, run_lit_hf
from runs import cpu_run, family_args, one_thread
from sklearn.metrics import matthews_corrcoef
from test_classification import cli_args
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, PretrainedConfig
from transformers.pytorch_utils import Conv1D

from lit_hf.cli import main
from lit_hf.data.glue import GLUE_TASKS, glue_file, read_glue_tsv
from lit_hf.errors import ConfigError
from lit_hf.options import QuantizationOptions
from lit_hf.quantization.conv1d import conv1d_to_linear
from lit_hf.quantization.plugin import FakeQuantizer, WeightFakeQuantizer

torchao = pytest.importorskip("torchao.quantization")  # the `quant` extra, which `dev` includes


def short_text(data_dir: Path, folder: Path) -> Path:
    """WikiText-2's first 150 validation lines (about 13 blocks of 64 GPT-2 tokens): a cheap evaluation set."""
    lines = (data_dir / "wikitext" / "wikitext-2" / "valid.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    path = folder / "valid.txt"
    path.write_text("".join(lines[:150]), encoding="utf-8")
    return path


def one_error_line(err: str) -> str:
    """The CLI's one `lit_hf: error:` line (progress bars share stderr), after checking there is no traceback."""
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("lit_hf: error:")]
    return line


def linear_by_hand(model: nn.Module) -> nn.Module:
    """Each Conv1D (x @ W + b, W of shape (in, out)) as an nn.Linear with weight W.T: the test's own conversion."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                linear = nn.Linear(*child.weight.shape)
                linear.weight.data, linear.bias.data = child.weight.data.t().contiguous(), child.bias.data
                setattr(parent, name, linear)
    return model


@torch.no_grad()
def perplexity(model: nn.Module, blocks: np.ndarray) -> dict[str, float]:
    """Float64 next-token NLL summed over the blocks, one block at a time."""
    nll = count = 0
    for block in torch.from_numpy(blocks).long():
        logits = model(input_ids=block[None]).logits[0, :-1].double()
        nll -= logits.log_softmax(-1).gather(-1, block[1:, None]).sum().item()
        count += len(block) - 1
    return {"loss": nll / count, "ppl": math.exp(nll / count)}


def test_conv1d_becomes_linear_with_bitwise_equal_outputs(causal_lm_dir):
    model = AutoModelForCausalLM.from_pretrained(causal_lm_dir("gpt2")).eval()
    ids = torch.randint(0, 1000, (2, 40))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        assert conv1d_to_linear(model) == 8  # 2 blocks x (c_attn, c_proj, c_fc, mlp.c_proj)
        after = model(input_ids=ids).logits
    assert not any(isinstance(m, Conv1D) for m in model.modules())
    assert torch.equal(before, after)


def validate_tiny_gpt2(tmp_path, data_dir, causal_lm_dir, gpt2_tokenizer, samples: int, *options: str):
    """`validate` of the tiny GPT-2 on `samples` blocks of 64 tokens with the quantization `options`: its
    results.json, the blocks as the reference cuts them, and the model with Linear for Conv1D, by hand."""
    text, model_dir = short_text(data_dir, tmp_path), causal_lm_dir("gpt2")
    main([
        "validate", *family_args("causal_lm", model_dir), *cpu_run(tmp_path), f"--data.validation_file={text}",
        "--data.block_size=64", f"--data.max_eval_samples={samples}", "--data.eval_batch_size=4", *options,
    ])  # fmt: skip
    blocks = reference_blocks(text, gpt2_tokenizer, 64)[:samples]
    return read_results(tmp_path), blocks, linear_by_hand(AutoModelForCausalLM.from_pretrained(model_dir).eval())


def test_quantized_perplexity_equals_torchao_by_hand_and_covers_every_projection(
    tmp_path, data_dir, causal_lm_dir, gpt2_tokenizer
):
    got, blocks, model = validate_tiny_gpt2(
        tmp_path, data_dir, causal_lm_dir, gpt2_tokenizer, 12,
        "--model.quantization.method=int8_dynamic_activation_int8_weight",
        "--model.quantization.compare_full_precision=true",
    )  # fmt: skip
    full = perplexity(model, blocks)
    config = torchao.Int8DynamicActivationInt8WeightConfig()
    torchao.quantize_(model, config, filter_fn=lambda m, name: isinstance(m, nn.Linear) and name != "lm_head")
    quantized = perplexity(model, blocks)
    assert quantized["ppl"] != full["ppl"]  # the quantization changes the numbers, so the check means something
    for name in ("loss", "ppl"):
        assert got[f"val/{name}"] == pytest.approx(quantized[name], rel=1e-6), name
        assert got[f"val_full/{name}"] == pytest.approx(full[name], rel=1e-6), name
        assert got[f"val_delta/{name}"] == pytest.approx(got[f"val/{name}"] - got[f"val_full/{name}"], abs=1e-12)
    (report_file,) = tmp_path.rglob("quantization.json")
    report = json.loads(report_file.read_text())
    assert report == got["quantization"]
    projections = {f"transformer.h.{i}.{p}" for i in range(2) for p in ("attn.c_attn", "attn.c_proj", "mlp.c_fc")}
    projections |= {f"transformer.h.{i}.mlp.c_proj" for i in range(2)}
    skipped = {name for names in report["skipped"].values() for name in names}
    assert report["quantized"] == {"Linear": 8} and not projections & skipped
    assert skipped == {"lm_head", "transformer.wte", "transformer.wpe"}  # the tied head and the embeddings


@torch.no_grad()
def test_quantized_classifier_equals_torchao_by_hand(tmp_path, data_dir, classifier_dir):
    model_dir = classifier_dir("bert", 2)
    args = ["--data.task_name=cola", f"--data.data_dir={data_dir / 'glue'}", "--data.max_eval_samples=60"]
    args += ["--model.quantization.method=intx_weight_only", "--model.quantization.bits=4"]
    args += ["--model.quantization.group_size=16", "--data.eval_batch_size=8"]
    main(["validate", *cli_args(tmp_path, model_dir, *args)])
    (results,) = (tmp_path / "runs").rglob("results.json")
    got = json.loads(results.read_text())
    dev = read_glue_tsv(glue_file(str(data_dir / "glue"), GLUE_TASKS["cola"], "validation"), GLUE_TASKS["cola"], "")
    dev = dev.select(range(60))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    config = torchao.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=torchao.PerGroup(16))
    torchao.quantize_(model, config)
    logits = torch.cat([model(**tokenizer(s, truncation=True, max_length=128, return_tensors="pt")).logits
                        for s in dev["sentence"]]).double()  # fmt: skip
    labels = torch.from_numpy(np.array(dev["label"], dtype=int))
    assert got["quantization"]["coverage"] == pytest.approx(14 / 17)  # 14 Linear layers; 3 embeddings stay
    assert got["val/matthews"] == pytest.approx(matthews_corrcoef(labels, logits.argmax(1)), abs=1e-6)
    loss = torch.nn.functional.cross_entropy(logits, labels)
    assert got["val/loss"] == pytest.approx(float(loss), abs=1e-6)


# family -> a built-in method, or the calibrated reference plug-in. Causal LM (W8A8, calibration) and classification
# (intx) run in the tests above; every method runs in one family at least (int8_weight_only per channel: in fit).
CALIBRATED = ["--model.quantization.quantizer=lit_hf.quantization.plugin.FakeQuantizer",
              "--model.quantization.calibration_batches=2", "--data.eval_batch_size=4"]  # fmt: skip
QUICKSTARTS = {
    "translation": [*CALIBRATED],  # the decoder's inputs come from the labels
    "summarization": ["--model.quantization.method=int8_weight_only", "--model.quantization.group_size=32"],
    "multiple_choice": [*CALIBRATED, "--model.quantization.quantizer.init_args.observer=percentile"],
    "image_classification": ["--model.quantization.method=float8_weight_only"],
}


@pytest.mark.parametrize("family", QUICKSTARTS)
def test_every_family_validates_quantized_beside_full_precision(tmp_path, family):
    main([
        "validate", f"--config={REPO / f'configs/quickstart_{family}.yaml'}", f"--trainer.default_root_dir={tmp_path}",
        f"--data.data_cache_dir={tmp_path / 'cache'}", "--data.max_eval_samples=8", "--trainer.limit_val_batches=2",
        "--trainer.enable_progress_bar=false", "--model.quantization.compare_full_precision=true",
        *QUICKSTARTS[family],
    ])  # fmt: skip
    got = read_results(tmp_path)
    names = {key.split("/", 1)[1] for key in got if key.startswith("val/")}
    assert names and got["quantization"]["coverage"] > 0
    if "--model.quantization.calibration_batches=2" in QUICKSTARTS[family]:
        scales = got["quantization"]["calibration"]["input_scales"]
        assert len(scales) == sum(got["quantization"]["quantized"].values()) and min(scales.values()) > 0
    for name in names:
        assert got[f"val_delta/{name}"] == pytest.approx(got[f"val/{name}"] - got[f"val_full/{name}"], abs=1e-9)


def test_validate_calibrates_on_a_glue_train_split(tmp_path, data_dir, classifier_dir):
    """validate reads GLUE's validation file only, unless calibration names the train split; batches are padded."""
    args = ["--data.task_name=cola", f"--data.data_dir={data_dir / 'glue'}", "--data.max_eval_samples=16"]
    args += [*CALIBRATED, "--data.max_train_samples=8"]
    main(["validate", *cli_args(tmp_path, classifier_dir("bert", 2), *args)])
    (results,) = (tmp_path / "runs").rglob("results.json")
    quantization = json.loads(results.read_text())["quantization"]
    assert quantization["quantized"] == {"Linear": 14} and quantization["calibration"]["split"] == "train"
    assert len(quantization["calibration"]["input_scales"]) == 14


def test_nothing_quantized_is_one_error_line(tmp_path, causal_lm_dir, data_dir, capsys):
    text = short_text(data_dir, tmp_path)
    with pytest.raises(SystemExit) as exit_info:  # no 32- or 128-input layer splits into groups of 48
        main([
            "validate", *family_args("causal_lm", causal_lm_dir("gpt2")), *cpu_run(tmp_path),
            f"--data.validation_file={text}", "--data.block_size=64", "--data.max_eval_samples=4",
            "--model.quantization.method=intx_weight_only", "--model.quantization.bits=4",
            "--model.quantization.group_size=48",
        ])  # fmt: skip
    assert exit_info.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("lit_hf: error: quantization intx_weight_only: 0/11 modules") and "nothing" in line
    assert not list(tmp_path.rglob("results.json"))


def test_without_torchao_one_line_says_how_to_install(tmp_path, causal_lm_dir, data_dir, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)  # `import torchao.quantization` now fails
    text = short_text(data_dir, tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([
            "validate", *family_args("causal_lm", causal_lm_dir("gpt2")), *cpu_run(tmp_path),
            f"--data.validation_file={text}", "--data.block_size=64", "--data.max_eval_samples=4",
            "--model.quantization={}",
        ])  # fmt: skip
    assert exit_info.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("lit_hf: error: quantization needs torchao") and 'pip install -e ".[quant]"' in line


def test_export_of_a_quantized_config_is_refused(tmp_path, causal_lm_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([
            "export", *family_args("causal_lm", causal_lm_dir("gpt2")), "--model.quantization={}",
            f"--ckpt_path={tmp_path / 'none.ckpt'}", f"--export_dir={tmp_path / 'out'}",
        ])  # fmt: skip
    assert exit_info.value.code == 2
    assert "does not write quantized models" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"method": "intx_weight_only"}, "needs them"),
        ({"method": "int8_weight_only", "bits": 4}, "intx_weight_only's"),
        ({"method": "intx_weight_only", "bits": 9}, "1 to 8"),
        ({"method": "float8_weight_only", "group_size": 32}, "weight-only int methods"),
        ({"method": "int8_weight_only", "group_size": 0}, "positive"),
        ({"calibration_batches": 2}, "name one in quantization.quantizer"),  # built-in methods do not calibrate
        ({"quantizer": WeightFakeQuantizer(), "calibration_batches": 2}, "name one in quantization.quantizer"),
        ({"quantizer": FakeQuantizer(), "calibration_batches": 0}, "positive"),
    ],
)
def test_impossible_options_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        QuantizationOptions(**options)


def test_calibration_in_fit_is_one_error_line(tmp_path, causal_lm_dir, data_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([
            "fit", *family_args("causal_lm", causal_lm_dir("gpt2")), *cpu_run(tmp_path),
            f"--data.train_file={short_text(data_dir, tmp_path)}", "--data.block_size=64",
            "--model.quantization.quantizer=lit_hf.quantization.plugin.FakeQuantizer",
            "--model.quantization.calibration_batches=2",
        ])  # fmt: skip
    assert exit_info.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("lit_hf: error: quantization.calibration_batches calibrates before validate and test")
    assert not list(tmp_path.rglob("*.ckpt")) and not (tmp_path / "cache").exists()


def numpy_fake_quantize(weight: np.ndarray, bits: int, block: tuple[int, int]) -> np.ndarray:
    """Symmetric fake quantization by hand, in float32: per block, scale = max|w| / ((qmax - qmin) / 2), then
    round(w * (1 / scale)) half to even, clipped to [qmin, qmax], times scale (torchao's order of operations: a
    weight that sits on a rounding tie decides differently under w / scale)."""
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    rows, cols = weight.shape
    blocks = weight.astype(np.float32).reshape(rows // block[0], block[0], cols // block[1], block[1])
    scale = np.abs(blocks).max(axis=(1, 3), keepdims=True) / np.float32((qmax - qmin) / 2)
    return (np.clip(np.round(blocks * (np.float32(1) / scale)), qmin, qmax) * scale).reshape(rows, cols)


@pytest.mark.parametrize(("granularity", "block"), [("per_channel", (1, 64)), ("per_tensor", (48, 64)),
                                                    ("per_group", (1, 16))])  # fmt: skip
def test_reference_plugin_fake_quantizes_as_numpy(granularity, block):

    weight = torch.randn(48, 64, generator=torch.Generator().manual_seed(0))
    got = WeightFakeQuantizer(bits=8, granularity=granularity, group_size=16).fake_quantize(weight)
    want = numpy_fake_quantize(weight.numpy(), 8, block)
    assert not np.allclose(want, weight.numpy(), atol=1e-4)  # the rounding shows
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-6)


def test_a_plugin_named_by_class_path_is_scored_with_exact_metrics(tmp_path, data_dir, causal_lm_dir, gpt2_tokenizer):
    got, blocks, model = validate_tiny_gpt2(
        tmp_path, data_dir, causal_lm_dir, gpt2_tokenizer, 8,
        "--model.quantization.quantizer=lit_hf.quantization.plugin.WeightFakeQuantizer",
        "--model.quantization.quantizer.init_args.bits=4",
    )  # fmt: skip
    full = perplexity(model, blocks)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name != "lm_head":
            fake = numpy_fake_quantize(module.weight.detach().numpy(), 4, (1, module.in_features))
            module.weight.data = torch.from_numpy(fake)
    quantized = perplexity(model, blocks)
    assert abs(quantized["ppl"] - full["ppl"]) > 1e-3
    assert got["val/ppl"] == pytest.approx(quantized["ppl"], rel=1e-6)
    assert got["quantization"]["method"] == "WeightFakeQuantizer" and got["quantization"]["quantized"] == {"Linear": 8}


def test_the_docs_example_quantizer_runs_as_a_plugin(tmp_path, data_dir, causal_lm_dir, monkeypatch):
    page = (REPO / "docs" / "quantization.md").read_text(encoding="utf-8")
    (source,) = [block for block in page.split("```python\n")[1:] if "class RoundToGrid" in block]
    (tmp_path / "my_pkg.py").write_text(source.split("```")[0], encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    main([
        "validate", *family_args("causal_lm", causal_lm_dir("gpt2")), *cpu_run(tmp_path),
        f"--data.validation_file={short_text(data_dir, tmp_path)}", "--data.block_size=64",
        "--data.max_eval_samples=4", "--model.quantization.quantizer=my_pkg.RoundToGrid",
        "--model.quantization.quantizer.init_args.bits=3", "--model.quantization.compare_full_precision=true",
    ])  # fmt: skip
    got = read_results(tmp_path)
    assert got["quantization"]["method"] == "RoundToGrid" and got["quantization"]["quantized"] == {"Linear": 8}
    assert abs(got["val_delta/loss"]) > 1e-4


def test_a_checkpoint_never_chooses_quantization() -> None:
    """A fit with a quantizer plug-in saves its class path; the checkpoint must not import it or quantize later runs."""
    from lit_hf.trust import checkpoint_choices

    plugin = {"class_path": "evil.Quantizer", "init_args": {}}
    saved = {"model_name_or_path": "org/a", "quantization": {"method": "int8_weight_only", "quantizer": plugin}}
    assert checkpoint_choices("c", saved, {}, set()) == {"model_name_or_path": "org/a"}


def test_fit_trains_full_precision_and_validates_a_quantized_copy(tmp_path):
    main([
        "fit", f"--config={REPO / 'configs/quickstart_clm.yaml'}", f"--trainer.default_root_dir={tmp_path}",
        f"--data.data_cache_dir={tmp_path / 'cache'}", "--trainer.max_steps=2", "--trainer.limit_val_batches=2",
        "--trainer.val_check_interval=2", "--trainer.enable_progress_bar=false", "--model.quantization={}",
        "--model.quantization.compare_full_precision=true",
    ])  # fmt: skip
    got = read_results(tmp_path)
    assert got["quantization"]["quantized"] == {"Linear": 8} and got["global_step"] == 2
    assert got["val/loss"] != got["val_full/loss"]
    (ckpt,) = tmp_path.rglob("last.ckpt")
    weights = torch.load(ckpt, weights_only=True)["state_dict"]  # plain tensors: the trained model stayed as it was
    assert "model.transformer.h.0.attn.c_attn.weight" in weights and all(
        type(w) is torch.Tensor for w in weights.values()
    )
    (export,) = tmp_path.rglob("huggingface")
    assert type(AutoModelForCausalLM.from_pretrained(export).transformer.h[0].attn.c_attn).__name__ == "Conv1D"


def calibration_run(tmp_path: Path, data_dir: Path, model_dir: Path, devices: int) -> dict:
    """validate with FakeQuantizer calibrated on the first 3 train batches of 4 blocks; its results.json."""
    lines = (data_dir / "wikitext" / "wikitext-2" / "valid.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp_path / "train.txt").write_text("".join(lines[150:350]), encoding="utf-8")  # about 25 blocks of 64
    root = tmp_path / str(devices)
    args = [
        "validate", *family_args("causal_lm", model_dir), *cpu_run(root, tmp_path / "cache"),
        f"--data.train_file={tmp_path / 'train.txt'}", f"--data.validation_file={short_text(data_dir, tmp_path)}",
        "--data.block_size=64", "--data.max_eval_samples=12", "--data.eval_batch_size=4",
        "--model.quantization.quantizer=lit_hf.quantization.plugin.FakeQuantizer",
        "--model.quantization.calibration_batches=3", "--model.quantization.compare_full_precision=true",
    ]  # fmt: skip
    if devices == 1:  # in this process (no start-up to pay), on one thread as each of the 3 processes runs
        with one_thread():
            main(args)
    else:
        run_lit_hf(*args, f"--trainer.devices={devices}", "--trainer.strategy=ddp")
    return read_results(root)


def numpy_fake_quantize_input(x: np.ndarray, scale: np.float32) -> np.ndarray:
    """Per-tensor symmetric int8 fake quantization by hand, torchao's order of operations."""
    return np.clip(np.round(x * (np.float32(1) / scale)), -128, 127) * scale


@torch.no_grad()
def hand_input_scales(projections: dict[str, nn.Linear], model: nn.Module, batches: torch.Tensor) -> dict[str, float]:
    """Max |x| of each projection's input over the calibration batches (4 blocks each, in order, as lit_hf batches
    them), and scale = max / 127.5 (half of int8's range), in float32."""
    absmax = dict.fromkeys(projections, 0.0)

    def record(name: str, inputs: tuple[torch.Tensor, ...]) -> None:
        absmax[name] = max(absmax[name], float(inputs[0].abs().max()))

    hooks = [m.register_forward_pre_hook(lambda _, a, n=n: record(n, a)) for n, m in projections.items()]
    for batch in batches.split(4):
        model(input_ids=batch)
    for hook in hooks:
        hook.remove()
    return {name: float(np.float32(value) / np.float32(127.5)) for name, value in absmax.items()}


def fake_quantize_by_hand(projections: dict[str, nn.Linear], scales: dict[str, float]) -> None:
    """Int8 per-channel weights and int8 per-tensor inputs with `scales`, in numpy."""
    for name, module in projections.items():
        module.weight.data = torch.from_numpy(numpy_fake_quantize(module.weight.numpy(), 8, (1, module.in_features)))
        scale = np.float32(scales[name])
        module.register_forward_pre_hook(
            lambda _, a, s=scale: torch.from_numpy(numpy_fake_quantize_input(a[0].numpy(), s))
        )


@torch.no_grad()
def test_calibrated_scales_equal_numpy_and_are_bitwise_equal_on_three_processes(
    tmp_path, data_dir, causal_lm_dir, gpt2_tokenizer
):
    model_dir = causal_lm_dir("gpt2")
    one, three = (calibration_run(tmp_path, data_dir, model_dir, devices) for devices in (1, 3))
    scales = one["quantization"]["calibration"]["input_scales"]
    assert three["quantization"]["calibration"]["input_scales"] == scales  # JSON floats: every bit
    assert three["val/ppl"] == pytest.approx(one["val/ppl"], rel=1e-6)
    model = linear_by_hand(AutoModelForCausalLM.from_pretrained(model_dir).eval())
    projections = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and name != "lm_head"}
    calibration = torch.from_numpy(reference_blocks(tmp_path / "train.txt", gpt2_tokenizer, 64)[:12]).long()
    want = hand_input_scales(projections, model, calibration)
    assert set(scales) == set(want)
    for name in want:
        assert scales[name] == pytest.approx(want[name], rel=1e-6), name
    fake_quantize_by_hand(projections, want)
    quantized = perplexity(model, reference_blocks(tmp_path / "valid.txt", gpt2_tokenizer, 64)[:12])
    assert one["val/ppl"] == pytest.approx(quantized["ppl"], rel=1e-6)
    assert abs(one["val/ppl"] - one["val_full/ppl"]) > 1e-4  # the inputs' rounding shows


def reduce_over(quantizers: list) -> object:
    """The all-reduce of the first quantizer's statistics over all of them, as N processes would do it."""

    def reduce(tensor: torch.Tensor, op: str) -> torch.Tensor:
        for kind in ("absmax", "counts"):
            for name, value in getattr(quantizers[0], kind).items():
                if value is tensor:
                    values = torch.stack([getattr(q, kind)[name] for q in quantizers])
                    return values.amax(0) if op == "max" else values.sum(0)
        raise AssertionError("not a statistic of the quantizer")

    return reduce


def numpy_percentile_bound(x: np.ndarray, percentile: float) -> np.float32:
    """The bfloat16 bin's upper edge above the rank-th smallest |x|, rank = ceil(percentile% of the count)."""
    ordered = np.sort(np.abs(x).astype(np.float32).ravel())
    value = ordered[math.ceil(percentile / 100 * ordered.size) - 1]
    return np.array(((value.view(np.int32) >> 16) + 1) << 16, dtype=np.int32).view(np.float32)


@torch.no_grad()
def test_percentile_scales_equal_numpy_and_are_the_same_from_shares():

    generator = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 24), nn.Linear(24, 8))
    x = torch.randn(6, 10, 16, generator=generator) * torch.randn(6, 10, 1, generator=generator).exp()  # heavy tails
    mask = torch.ones(6, 10, dtype=torch.long)
    mask[:, 7:] = 0
    x[:, 7:] = 1e4  # padding: never part of the statistics
    whole, shares = (
        FakeQuantizer(observer="percentile", percentile=99),
        [FakeQuantizer(observer="percentile", percentile=99) for _ in range(3)],
    )
    for quantizer, rows in [(whole, slice(0, 6)), (shares[0], slice(0, 2)), (shares[1], slice(2, 4)),
                            (shares[2], slice(4, 6))]:  # fmt: skip
        copy = deepcopy(model)  # a process's own model: its own observers
        quantizer.prepare(copy)
        quantizer.observe({"attention_mask": mask[rows]})
        copy(x[rows])
    whole.synchronize(lambda tensor, op: tensor)
    shares[0].synchronize(reduce_over(shares))
    assert all(torch.equal(whole.scales[name], shares[0].scales[name]) for name in ("0", "1"))
    bound = numpy_percentile_bound(x[:, :7].numpy(), 99)
    assert bound < np.abs(x[:, :7].numpy()).max()  # the percentile leaves the largest inputs out
    assert whole.scales["0"].item() == pytest.approx(float(bound / np.float32(127.5)), rel=1e-6)


@torch.no_grad()
def test_a_multiple_choice_mask_leaves_padding_out_as_the_model_flattens_choices():
    model, x = nn.Linear(16, 8), torch.randn(6, 10, 16, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(6, 10, dtype=torch.long)
    mask[:, 6:] = 0
    x[:, 6:] = 1e4  # padding
    quantizer = FakeQuantizer()
    quantizer.prepare(model)
    quantizer.observe({"attention_mask": mask.reshape(2, 3, 10)})  # 2 examples x 3 choices, as the batch holds it
    model(x)  # (examples * choices, seq, features), as a multiple-choice model runs its encoder
    quantizer.synchronize(lambda tensor, op: tensor)
    want = np.float32(np.abs(x[:, :6].numpy()).max()) / np.float32(127.5)
    assert quantizer.scales[""].item() == pytest.approx(float(want), rel=1e-6)


@torch.no_grad()
def test_an_encoder_decoder_is_observed_unmasked():
    """The source's mask does not describe a decoder's tokens (whose length may equal the source's), so none is used."""
    model, x = nn.Linear(16, 8), torch.ones(2, 10, 16)
    model.config = PretrainedConfig(is_encoder_decoder=True)
    x[:, 6:] = 1e4  # beyond the source's mask
    quantizer = FakeQuantizer()
    quantizer.prepare(model)
    quantizer.observe({"attention_mask": (torch.arange(10) < 6).long().expand(2, 10)})
    model(x)
    quantizer.synchronize(lambda tensor, op: tensor)
    assert quantizer.scales[""].item() == pytest.approx(1e4 / 127.5, rel=1e-6)
