"""LoRA through PEFT: what trains, what checkpoints hold, resuming, the two exports, and DDP."""

import dataclasses
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from reference import read_results, reference_blocks, reference_perplexity, run_lit_hf
from runs import cpu_run, family_args
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
)

from lit_hf.adapters import exportable_model
from lit_hf.cli import main
from lit_hf.errors import ConfigError
from lit_hf.options import LoraOptions
from lit_hf.tasks import CausalLMTask, SequenceClassificationTask, TranslationTask

# The modules PEFT's table adapts by default, per architecture (peft.utils.constants), written out independently.
DEFAULT_TARGETS = {"gpt2": {"c_attn"}, "bert": {"query", "value"}, "t5": {"q", "v"}}
AUTO_CLASS = {"gpt2": AutoModelForCausalLM, "bert": AutoModelForSequenceClassification, "t5": AutoModelForSeq2SeqLM}


def make_task(kind: str, nodrop_gpt2_dir: Path, classifier_dir, tiny_t5_dir: Path, lora: LoraOptions = LoraOptions()):
    if kind == "gpt2":
        return CausalLMTask(model_name_or_path=str(nodrop_gpt2_dir), lora=lora), str(nodrop_gpt2_dir)
    if kind == "bert":
        base = str(classifier_dir("bert", None))
        return SequenceClassificationTask(model_name_or_path=base, lora=lora, label_names=["a", "b", "c"]), base
    return TranslationTask(model_name_or_path=str(tiny_t5_dir), lora=lora), str(tiny_t5_dir)


def logits(model: torch.nn.Module, kind: str) -> torch.Tensor:
    torch.manual_seed(1)
    ids = torch.randint(5, 1000, (2, 9))  # (batch, seq_len)
    extra = {"decoder_input_ids": ids[:, :5]} if kind == "t5" else {}
    with torch.no_grad():
        return model.eval()(input_ids=ids, attention_mask=torch.ones_like(ids), **extra).logits


@pytest.mark.parametrize("kind", ["gpt2", "bert", "t5"])
def test_only_adapters_and_the_head_train(kind, nodrop_gpt2_dir, classifier_dir, tiny_t5_dir) -> None:
    task, _ = make_task(kind, nodrop_gpt2_dir, classifier_dir, tiny_t5_dir)
    base = task.model.get_base_model()
    adapted = [name for name, _ in base.named_modules() if name.split(".")[-1] in DEFAULT_TARGETS[kind]]
    want = {f"model.base_model.model.{m}.lora_{ab}.default.weight" for m in adapted for ab in "AB"}
    if kind == "bert":  # the new classification head trains whole
        want |= {f"model.base_model.model.classifier.modules_to_save.default.{p}" for p in ("weight", "bias")}
    assert adapted and {name for name, p in task.named_parameters() if p.requires_grad} == want


@pytest.mark.parametrize("kind", ["gpt2", "bert", "t5"])
def test_merged_and_adapter_exports_equal_the_adapted_model(
    kind, nodrop_gpt2_dir, classifier_dir, tiny_t5_dir, tmp_path
) -> None:
    lora = LoraOptions(dropout=0.0, merge=True)
    task, base_dir = make_task(kind, nodrop_gpt2_dir, classifier_dir, tiny_t5_dir, lora)
    torch.manual_seed(2)
    for param in task.model.parameters():
        if param.requires_grad:  # as if trained: LoRA starts with B = 0, which would make merging trivial
            param.data.normal_(0.0, 0.3)
    want = logits(task.model, kind)
    merged = exportable_model(task.model, task.lora)
    assert not isinstance(merged, PeftModel)
    torch.testing.assert_close(logits(merged, kind), want, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits(task.model, kind), want, atol=0, rtol=0)  # the task's own model is untouched
    exportable_model(task.model, dataclasses.replace(lora, merge=False)).save_pretrained(tmp_path / "adapter")
    label_args = {"num_labels": 3} if kind == "bert" else {}
    reloaded = PeftModel.from_pretrained(AUTO_CLASS[kind].from_pretrained(base_dir, **label_args), tmp_path / "adapter")
    torch.testing.assert_close(logits(reloaded, kind), want, atol=1e-5, rtol=0)


def test_lora_options_that_cannot_work(nodrop_gpt2_dir) -> None:
    with pytest.raises(ConfigError, match="lora .* cannot be combined with from_scratch"):
        CausalLMTask(model_name_or_path=str(nodrop_gpt2_dir), lora=LoraOptions(), from_scratch=True)
    with pytest.raises(ConfigError, match="lora.r must be a positive rank"):
        LoraOptions(r=0)
    with pytest.raises(ConfigError, match="lora.dropout must be in"):
        LoraOptions(dropout=1.0)
    with pytest.raises(ConfigError, match="lora.target_modules is empty"):
        LoraOptions(target_modules=[])
    with pytest.raises(ConfigError, match="lora.target_modules"):
        CausalLMTask(model_name_or_path=str(nodrop_gpt2_dir), lora=LoraOptions(target_modules=["no_such_module"]))


def clm_args(model_dir: Path, data_dir: Path, root: Path, *extra: str) -> list[str]:
    return [
        *family_args("causal_lm", model_dir),
        *cpu_run(root, root.parent / "cache"),
        "--trainer.num_sanity_val_steps=0",
        "--seed_everything=0",  # the same LoRA A initialisation in every run
        "--model.lora={}",
        "--model.lora.dropout=0",
        "--model.optim.learning_rate=1e-2",
        "--model.optim.lr_scheduler_type=constant",  # a linear decay would end at 2 epochs in the run that is resumed
        f"--data.train_file={data_dir / 'wikitext/wiki_00'}",
        f"--data.validation_file={data_dir / 'wikitext/wikitext-2/valid.txt'}",
        "--data.block_size=32",
        "--data.max_train_samples=8",  # with batch_size 8: one batch per epoch, so shuffling cannot change a run
        "--data.batch_size=8",
        "--data.max_eval_samples=8",
        *extra,
    ]


def checkpoint_of(root: Path) -> Path:
    (ckpt,) = root.rglob("*.ckpt")
    return ckpt


def test_fit_resume_validate_and_export(nodrop_gpt2_dir, data_dir, gpt2_tokenizer, tmp_path) -> None:
    main(["fit", *clm_args(nodrop_gpt2_dir, data_dir, tmp_path / "straight", "--trainer.max_epochs=3")])
    main(["fit", *clm_args(nodrop_gpt2_dir, data_dir, tmp_path / "first", "--trainer.max_epochs=2")])
    state = torch.load(checkpoint_of(tmp_path / "first"), weights_only=False)["state_dict"]
    assert state and all(".lora_A." in k or ".lora_B." in k for k in state)  # adapters only
    resumed = [f"--ckpt_path={checkpoint_of(tmp_path / 'first')}", "--model.lora.merge=true"]
    main(["fit", *clm_args(nodrop_gpt2_dir, data_dir, tmp_path / "resumed", "--trainer.max_epochs=3", *resumed)])
    straight, after = read_results(tmp_path / "straight"), read_results(tmp_path / "resumed")
    assert after["global_step"] == straight["global_step"] == 3
    assert after["val/loss"] == pytest.approx(straight["val/loss"], rel=1e-6)  # the third epoch continued the same run
    (merged_dir,) = (tmp_path / "resumed").rglob("huggingface")
    (adapter_dir,) = (tmp_path / "straight").rglob("huggingface")
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(nodrop_gpt2_dir), adapter_dir)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    torch.testing.assert_close(logits(merged, "gpt2"), logits(adapted, "gpt2"), atol=1e-5, rtol=0)
    restored = f"--ckpt_path={checkpoint_of(tmp_path / 'straight')}"
    main(["validate", *clm_args(nodrop_gpt2_dir, data_dir, tmp_path / "validate", restored)])
    blocks = reference_blocks(data_dir / "wikitext/wikitext-2/valid.txt", gpt2_tokenizer, 32)[:8]
    want = reference_perplexity(merged_dir, blocks)  # a plain transformers forward in float64
    assert read_results(tmp_path / "validate")["val/loss"] == pytest.approx(want["loss"], rel=1e-5)


def test_fit_on_two_processes_equals_one(nodrop_gpt2_dir, data_dir, tmp_path) -> None:
    # The same 8 blocks per step: 8 on one process, 4 + 4 on two (DDP averages the two means of 4).
    main(["fit", *clm_args(nodrop_gpt2_dir, data_dir, tmp_path / "one", "--trainer.max_epochs=2")])
    two = clm_args(nodrop_gpt2_dir, data_dir, tmp_path / "two", "--trainer.max_epochs=2", "--data.batch_size=4")
    run_lit_hf("fit", *two, "--trainer.devices=2", "--trainer.strategy=ddp")
    one, two = read_results(tmp_path / "one"), read_results(tmp_path / "two")
    for key in ("val/loss", "val/ppl", "val/accuracy"):
        assert two[key] == pytest.approx(one[key], rel=1e-6), key
    state = torch.load(checkpoint_of(tmp_path / "two"), weights_only=False)["state_dict"]
    assert state and all(".lora_A." in k or ".lora_B." in k for k in state)


@pytest.mark.parametrize("family", ["multiple_choice", "summarization"])
def test_new_families_train_adapters_and_their_head(family, classifier_dir, tiny_t5_dir) -> None:
    """The families PEFT has no task type for keep their head trainable through modules_to_save."""
    from lit_hf.tasks import MultipleChoiceTask, SummarizationTask

    if family == "multiple_choice":
        task = MultipleChoiceTask(model_name_or_path=str(classifier_dir("bert", None)), lora=LoraOptions())
        head = {f"model.base_model.model.classifier.modules_to_save.default.{p}" for p in ("weight", "bias")}
    else:
        task = SummarizationTask(model_name_or_path=str(tiny_t5_dir), lora=LoraOptions())
        head = set()
    base = task.model.get_base_model()
    adapted = [name for name, _ in base.named_modules() if name.split(".")[-1] in ("query", "value", "q", "v")]
    want = {f"model.base_model.model.{m}.lora_{ab}.default.weight" for m in adapted for ab in "AB"} | head
    assert adapted and {name for name, p in task.named_parameters() if p.requires_grad} == want
