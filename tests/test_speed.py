"""--model.speed.compile and --model.speed.gradient_checkpointing: the numbers, checkpoints and exports of a run
without them."""

import functools
from pathlib import Path

import pytest
import torch
from reference import read_results, reference_blocks, reference_perplexity
from runs import cpu_run, family_args
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    ConvNextImageProcessorPil,
    ViTConfig,
    ViTForImageClassification,
)

from lit_hf.cli import main
from lit_hf.errors import ConfigError
from lit_hf.options import GenerationOptions, LoraOptions, SpeedOptions
from lit_hf.speed import is_compiled
from lit_hf.tasks import (
    CausalLMTask,
    ImageClassificationTask,
    MultipleChoiceTask,
    SequenceClassificationTask,
    SummarizationTask,
    TranslationTask,
)

DATA = ["--data=lit_hf.data.LanguageModelingDataModule", "--data.validation_file=unused.txt"]
CHECKPOINTED = SpeedOptions(gradient_checkpointing=True)
FAMILIES = ["causal_lm", "text_classification", "translation", "summarization", "multiple_choice", "image"]


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    config.num_labels = 3
    path = tmp_path_factory.mktemp("tiny-vit-speed")
    ViTForImageClassification(config).save_pretrained(path)
    ConvNextImageProcessorPil(size={"shortest_edge": 32}, crop_pct=0.875).save_pretrained(path)
    return path


def fit_args(model_dir: Path, data_dir: Path, root: Path, *extra: str) -> list[str]:
    return [
        *family_args("causal_lm", model_dir),
        *cpu_run(root, root.parent / "cache"),
        "--trainer.num_sanity_val_steps=0",
        "--trainer.log_every_n_steps=1",
        "--seed_everything=0",
        "--model.optim.learning_rate=1e-2",
        f"--data.train_file={data_dir / 'wikitext/wiki_00'}",
        f"--data.validation_file={data_dir / 'wikitext/wikitext-2/valid.txt'}",
        "--data.block_size=32",
        "--data.max_train_samples=24",  # 3 steps of 8
        "--data.batch_size=8",
        "--data.max_eval_samples=8",
        "--trainer.max_epochs=1",
        *extra,
    ]


def test_compiled_fit_and_validate_equal_eager_ones_and_checkpoints_stay_plain(
    nodrop_gpt2_dir, data_dir, gpt2_tokenizer, tmp_path, monkeypatch
) -> None:
    """A compiled fit's losses and validation equal an eager fit's; its checkpoint validates to the same perplexity
    eagerly and compiled, and so does its export in a plain transformers forward.

    The fit compiles with the `aot_eager` backend (dynamo's graphs and AOT autograd's backward, without code
    generation, whose C++ builds take minutes on a loaded 2-core machine); the compiled `validate` runs the real
    default path, inductor, on the forward alone."""
    from reference import logged

    main(["fit", *fit_args(nodrop_gpt2_dir, data_dir, tmp_path / "eager")])
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    main(["fit", *fit_args(nodrop_gpt2_dir, data_dir, tmp_path / "compiled", "--model.speed.compile=true")])
    monkeypatch.undo()
    eager, compiled = read_results(tmp_path / "eager"), read_results(tmp_path / "compiled")
    steps = logged(tmp_path / "compiled", "train/loss")
    assert len(steps) == 3 and steps == pytest.approx(logged(tmp_path / "eager", "train/loss"), rel=1e-5)
    for key in ("val/loss", "val/ppl", "val/accuracy"):
        assert compiled[key] == pytest.approx(eager[key], rel=1e-5), key
    (ckpt,) = (tmp_path / "compiled").rglob("*.ckpt")
    state = torch.load(ckpt, weights_only=False)["state_dict"]
    assert state and not [k for k in state if "_orig_mod" in k]
    (export,) = (tmp_path / "compiled").rglob("huggingface")
    assert not [k for k in load_file(export / "model.safetensors") if "_orig_mod" in k]
    _, info = AutoModelForCausalLM.from_pretrained(export, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    blocks = reference_blocks(data_dir / "wikitext/wikitext-2/valid.txt", gpt2_tokenizer, 32)[:8]
    want = reference_perplexity(export, blocks)["loss"]  # float64, one block at a time
    assert compiled["val/loss"] == pytest.approx(want, rel=1e-5)
    CausalLMTask(model_name_or_path=str(nodrop_gpt2_dir)).load_state_dict(state)  # strict: the eager task's own keys
    # The checkpoint's hyperparameters say compile=true; the command line overrides them.
    for name, extra in (("eager", ["--model.speed.compile=false"]), ("inductor", [])):
        main(
            [
                "validate",
                *fit_args(nodrop_gpt2_dir, data_dir, tmp_path / f"validate-{name}", f"--ckpt_path={ckpt}", *extra),
            ]
        )
        assert read_results(tmp_path / f"validate-{name}")["val/loss"] == pytest.approx(want, rel=1e-5), name


@pytest.mark.parametrize("family", ["causal_lm", "translation"])
def test_compiled_models_generate_as_eager_ones(family, nodrop_gpt2_dir, tiny_t5_dir) -> None:
    """`generate` runs eagerly under compile: the same tokens, without compiling (which would take seconds)."""
    task_class, path = (CausalLMTask, nodrop_gpt2_dir) if family == "causal_lm" else (TranslationTask, tiny_t5_dir)
    generation = GenerationOptions(max_new_tokens=6)
    eager, compiled = (
        task_class(model_name_or_path=str(path), generation=generation, speed=SpeedOptions(compile=c))
        for c in (False, True)
    )
    compiled.configure_model()
    assert is_compiled(compiled.model)
    torch.manual_seed(1)
    ids = torch.randint(5, 1000, (2, 7))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    want, got = (t.eval()._generate(batch) for t in (eager, compiled))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs  # nothing was compiled
    if family == "causal_lm":
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    else:
        assert got[0] == want[0]


def make_task(family: str, dirs: dict, **options):
    """A tiny task of the family and a batch for it: (task, batch)."""
    torch.manual_seed(1)
    ids = torch.randint(5, 1000, (4, 9))  # (batch, seq_len)
    mask = torch.ones_like(ids)
    if family == "causal_lm":
        return CausalLMTask(model_name_or_path=str(dirs["gpt2"]), **options), {"input_ids": ids, "labels": ids}
    if family == "text_classification":
        task = SequenceClassificationTask(model_name_or_path=str(dirs["bert_cls"]), **options)
        return task, {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 2, 1])}
    if family in ("translation", "summarization"):
        task = (TranslationTask if family == "translation" else SummarizationTask)(
            model_name_or_path=str(dirs["t5"]), **options
        )
        return task, {"input_ids": ids, "attention_mask": mask, "labels": ids[:, :5].contiguous()}
    if family == "multiple_choice":
        task = MultipleChoiceTask(model_name_or_path=str(dirs["bert"]), **options)
        choices = ids.view(2, 2, 9)  # (batch, num_choices, seq_len)
        return task, {"input_ids": choices, "attention_mask": torch.ones_like(choices), "labels": torch.tensor([0, 1])}
    task = ImageClassificationTask(model_name_or_path=str(dirs["vit"]), **options)
    return task, {"pixel_values": torch.randn(4, 3, 32, 32), "labels": torch.tensor([0, 1, 2, 0])}


def step(task, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, int]]:
    """One training forward and backward: the loss, the gradients, and how often each module was called (a block's
    recomputation calls its submodules again: transformers checkpoints the block's `forward`, not its hooks)."""
    calls: dict[str, int] = {}
    for name, module in task.model.named_modules():
        module.register_forward_pre_hook(lambda *_, name=name: calls.__setitem__(name, calls.get(name, 0) + 1))
    task.model.train()
    torch.manual_seed(2)  # the same dropout masks (checkpointing replays the random state it recomputes with)
    loss = task.model(**batch).loss
    loss.backward()
    grads = {name: p.grad for name, p in task.model.named_parameters() if p.requires_grad}
    return loss.detach(), grads, calls


@pytest.fixture(scope="module")
def dirs(nodrop_gpt2_dir, tiny_t5_dir, vit_dir, classifier_dir) -> dict:
    return {"gpt2": nodrop_gpt2_dir, "t5": tiny_t5_dir, "vit": vit_dir, "bert": classifier_dir("bert", None)} | {
        "bert_cls": classifier_dir("bert", 3)
    }


def blocks(model: torch.nn.Module) -> list[str]:
    """The repeated blocks (entries of a ModuleList) whose `gradient_checkpointing` switch is on."""
    lists = {name for name, m in model.named_modules() if isinstance(m, torch.nn.ModuleList)}
    on = [name for name, m in model.named_modules() if getattr(m, "gradient_checkpointing", False) is True]
    return [name for name in on if name.rpartition(".")[0] in lists]


def check_recomputed(task, batch: dict, plain, plain_batch: dict) -> dict[str, torch.Tensor]:
    """The checkpointed task's loss and gradients equal the plain one's, and each of its blocks ran twice."""
    assert len(blocks(task.model)) >= 2 and not blocks(plain.model)
    plain_loss, plain_grads, plain_calls = step(plain, plain_batch)
    loss, grads, calls = step(task, batch)
    torch.testing.assert_close(loss, plain_loss, atol=1e-6, rtol=1e-6)
    assert grads.keys() == plain_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, plain_grads[name], atol=1e-6, rtol=1e-5, msg=name)
    recomputed = {name for name in calls if calls[name] > plain_calls[name]}
    for block in blocks(task.model):  # its submodules were called again in the backward pass
        assert any(name.startswith(block + ".") for name in recomputed), block
    return grads


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_checkpointing_recomputes_to_the_same_loss_and_gradients(family, dirs) -> None:
    check_recomputed(*make_task(family, dirs, speed=CHECKPOINTED), *make_task(family, dirs))


def test_lora_with_gradient_checkpointing_trains_the_adapters(dirs) -> None:
    """Frozen embeddings give the blocks inputs that need no gradient; non-reentrant checkpointing still backprops."""
    lora = LoraOptions(dropout=0.0)
    task = make_task("causal_lm", dirs, speed=CHECKPOINTED, lora=lora)
    grads = check_recomputed(*task, *make_task("causal_lm", dirs, lora=lora))
    assert {name.split(".")[-3] for name in grads} == {"lora_A", "lora_B"}
    assert all(grads[n].abs().sum() > 0 for n in grads if ".lora_B." in n)  # B starts at zero, so A's grads are 0


def test_speed_options_that_cannot_work(nodrop_gpt2_dir, tmp_path) -> None:
    from transformers import ResNetConfig, ResNetForImageClassification

    with pytest.raises(ConfigError, match="speed.compile_mode='max-autotune' needs speed.compile=true"):
        SpeedOptions(compile_mode="max-autotune")
    ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8], depths=[1])).save_pretrained(tmp_path)
    ConvNextImageProcessorPil(size={"shortest_edge": 32}).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="ResNetForImageClassification does not support speed.gradient_checkpointing"):
        ImageClassificationTask(model_name_or_path=str(tmp_path), speed=CHECKPOINTED)


@pytest.mark.parametrize(
    ("option", "needle"),
    [
        ("--model.speed.compile_mode=max-autotune", "needs speed.compile=true"),
        ("--model.speed.compile_mode=fast", "reduce-overhead"),
    ],
)
def test_cli_speed_mistakes_give_one_line(option, needle, nodrop_gpt2_dir, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["fit", "--model=lit_hf.tasks.CausalLMTask", f"--model.model_name_or_path={nodrop_gpt2_dir}", *DATA, option]
        )
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("lit_hf: error:")]
    assert exit_info.value.code == 2 and len(lines) == 1 and needle in lines[0], err
