"""The option groups: their `--help`, their checks, the keys they replaced (one line naming the new key, the
migration table, checkpoints saved with the old keys) and plain hyperparameters."""

import ast
import dataclasses
import re
from pathlib import Path

import pytest
import torch
import yaml
from reference import read_results
from runs import family_args

from lit_hf.cli import main
from lit_hf.data import LanguageModelingDataModule
from lit_hf.errors import ConfigError
from lit_hf.options import MOVED, GenerationOptions, HubOptions, LoraOptions, OptimOptions, grouped_hparams
from lit_hf.tasks import CausalLMTask, ImageClassificationTask

REPO = Path(__file__).resolve().parents[1]
CLM = family_args("causal_lm")


def attribute_docstrings() -> dict[str, dict[str, str]]:
    """group class -> field -> its docstring, read from lit_hf/options.py's source (not through jsonargparse)."""
    tree = ast.parse((REPO / "lit_hf" / "options.py").read_text())
    docs: dict[str, dict[str, str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            body = node.body
            docs[node.name] = {
                first.target.id: " ".join(second.value.value.split())
                for first, second in zip(body, body[1:], strict=False)
                if isinstance(first, ast.AnnAssign) and isinstance(second, ast.Expr)
            }
    return docs


def help_text(capsys: pytest.CaptureFixture, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args])
    assert exit_info.value.code in (0, None)
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_help_shows_every_field_of_every_group_with_its_docstring(capsys) -> None:
    docs = attribute_docstrings()
    groups = {"hub": HubOptions, "optim": OptimOptions, "generation": GenerationOptions}
    for cls, fields in [(c, dataclasses.fields(c)) for c in (*groups.values(), LoraOptions)]:
        assert {f.name for f in fields} == set(docs[cls.__name__]), cls  # every field has a docstring
    task = "lit_hf.tasks.TranslationTask"
    printed = help_text(capsys, f"--model={task}", f"--model.help={task}")
    for group, cls in groups.items():
        for name, doc in docs[cls.__name__].items():
            assert f"--model.{group}.{name} " in printed and doc in printed, (group, name)
    printed = help_text(capsys, *CLM, "--model.lora.help")
    for name, doc in docs["LoraOptions"].items():
        assert f"--model.lora.{name} " in printed and doc in printed, name


def test_group_checks_name_the_option() -> None:
    for bad, message in [
        (lambda: OptimOptions(warmup_ratio=1.0), "optim.warmup_ratio must be in"),
        (lambda: OptimOptions(warmup_steps=-1), "optim.warmup_steps must be >= 0"),
        (lambda: GenerationOptions(top_p=0.0), "generation.top_p must be positive"),
    ]:
        with pytest.raises(ConfigError, match=message):
            bad()


def test_a_text_task_refuses_an_image_processor_and_an_image_task_a_tokenizer(causal_lm_dir) -> None:
    with pytest.raises(ConfigError, match="image_processor_name is for image tasks"):
        CausalLMTask(str(causal_lm_dir("gpt2")), hub=HubOptions(image_processor_name="x"))
    with pytest.raises(ConfigError, match="set hub.image_processor_name, not tokenizer_name"):
        ImageClassificationTask(str(REPO / "configs/quickstart/resnet-tiny"), hub=HubOptions(tokenizer_name="x"))


def test_saved_hyperparameters_hold_plain_values(causal_lm_dir) -> None:
    """Checkpoints of tasks and data modules built in Python load with weights_only=True, as the CLI's do."""
    model_dir = str(causal_lm_dir("gpt2"))
    task = CausalLMTask(model_dir, optim=OptimOptions(learning_rate=0.25), lora=None)
    data = LanguageModelingDataModule(model_dir, hub=HubOptions(revision="v1"), validation_file="x.txt")
    assert task.hparams["optim"]["learning_rate"] == 0.25 and task.hparams_initial["hub"]["revision"] is None
    assert data.hparams["hub"]["revision"] == "v1" and data.hparams_initial["hub"]["revision"] == "v1"
    assert task.optim.learning_rate == 0.25 and data.hub.revision == "v1"  # the groups themselves, typed
    assert yaml.safe_dump(dict(task.hparams)) and yaml.safe_dump(dict(data.hparams))  # no Python objects


def migration_table() -> dict[str, str]:
    text = (REPO / "docs" / "migration.md").read_text()
    return dict(re.findall(r"^\| `(\w+)` \| `([\w.]+)` \|$", text, flags=re.MULTILINE))


def test_migration_page_lists_every_moved_key() -> None:
    assert migration_table() == MOVED


@pytest.mark.parametrize(
    ("where", "given", "line"),
    [
        ("command line", "--model.learning_rate=1e-4", "--model.learning_rate is now --model.optim.learning_rate"),
        ("command line", "--model.peft=lora", "--model.peft is now --model.lora"),
        ("command line", "--model.init_args.lora_r=4", "--model.lora_r is now --model.lora.r"),
        ("yaml", {"num_beams": 4}, "--model.num_beams is now --model.generation.num_beams"),
        ("yaml", {"gradient_checkpointing": True}, "--model.gradient_checkpointing is now --model.speed."),
        ("command line", "--data.tokenizer_name_or_path=x", "--data.tokenizer_name_or_path is now linked from"),
    ],
)
def test_an_old_key_stops_with_one_line_naming_the_new_one(where, given, line, tmp_path, capsys) -> None:
    args = ["fit", *CLM, f"--trainer.default_root_dir={tmp_path}"]
    if where == "yaml":
        config = {"model": {"class_path": "lit_hf.tasks.TranslationTask", "init_args": given}}
        (tmp_path / "old.yaml").write_text(yaml.safe_dump(config))
        args += [f"--config={tmp_path / 'old.yaml'}"]
    else:
        args += [given]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1, err
    assert err[0].startswith(f"lit_hf: error: {line}") and err[0].endswith("(docs/migration.md)"), err
    assert not list(tmp_path.glob("lightning_logs"))


# What CausalLMTask saved as hyperparameters before the groups (57acf82), less the unchanged keys.
FLAT = {
    "config_name": None, "tokenizer_name": None, "revision": None, "cache_dir": None, "trust_remote_code": False,
    "learning_rate": 0.0123, "weight_decay": 0.01, "adam_epsilon": 1e-8, "warmup_ratio": 0.0, "warmup_steps": 2,
    "lr_scheduler_type": "constant", "max_new_tokens": 7, "do_sample": None, "temperature": None, "top_k": None,
    "top_p": None, "num_beams": None, "repetition_penalty": None, "no_repeat_ngram_size": None, "peft": None,
    "lora_r": 8, "lora_alpha": 16.0, "lora_dropout": 0.05, "lora_target_modules": None, "merge_adapters": False,
    "compile": False, "compile_mode": "default", "gradient_checkpointing": False,
}  # fmt: skip


def test_flat_hyperparameters_of_earlier_checkpoints_become_groups() -> None:
    grouped = grouped_hparams({"model_name_or_path": "m", "dtype": None, **FLAT})
    assert grouped == {
        "model_name_or_path": "m",
        "dtype": None,
        "hub": {"config_name": None, "tokenizer_name": None, "revision": None, "cache_dir": None,
                "trust_remote_code": False},
        "optim": {"learning_rate": 0.0123, "weight_decay": 0.01, "adam_epsilon": 1e-8, "warmup_ratio": 0.0,
                  "warmup_steps": 2, "lr_scheduler_type": "constant"},
        "generation": {"max_new_tokens": 7, "do_sample": None, "temperature": None, "top_k": None, "top_p": None,
                       "num_beams": None, "repetition_penalty": None, "no_repeat_ngram_size": None},
        "lora": None,  # peft None: the lora_* values were unused
        "speed": {"compile": False, "compile_mode": "default", "gradient_checkpointing": False},
    }  # fmt: skip
    adapters = grouped_hparams({**FLAT, "peft": "lora", "lora_r": 4, "merge_adapters": True})
    assert adapters["lora"] == {"r": 4, "alpha": 16.0, "dropout": 0.05, "target_modules": None, "merge": True}
    assert grouped_hparams(grouped) == grouped  # grouped ones stay as they are


def test_a_checkpoint_with_flat_hyperparameters_validates(causal_lm_dir, data_dir, tmp_path) -> None:
    model_dir = str(causal_lm_dir("gpt2"))
    data = [f"--data.validation_file={data_dir / 'wikitext/wiki_00'}", "--data.block_size=32"]
    data += ["--data.max_eval_samples=4", f"--data.data_cache_dir={tmp_path / 'cache'}"]
    common = [*CLM, *data, "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    task = CausalLMTask(model_dir)
    torch.manual_seed(0)
    with torch.no_grad():
        for param in task.parameters():
            param.add_(0.05 * torch.randn_like(param))  # "trained": not the weights model_dir holds
    task.model.save_pretrained(tmp_path / "trained")
    task.tokenizer.save_pretrained(tmp_path / "trained")
    trained = f"--model.model_name_or_path={tmp_path / 'trained'}"
    main(["validate", *common, trained, f"--trainer.default_root_dir={tmp_path}/a"])
    hparams = {"_class_path": "lit_hf.tasks.CausalLMTask", "model_name_or_path": model_dir, "dtype": None, **FLAT}
    hparams |= {"from_scratch": False, "config_overrides": None}
    checkpoint = {"state_dict": task.state_dict(), "hyper_parameters": hparams, "epoch": 0, "global_step": 0}
    checkpoint["pytorch-lightning_version"] = "2.6.6"
    torch.save(checkpoint, tmp_path / "old.ckpt")
    main(["validate", *common, f"--ckpt_path={tmp_path / 'old.ckpt'}", f"--trainer.default_root_dir={tmp_path}/b"])
    assert read_results(tmp_path / "b")["val/loss"] == pytest.approx(read_results(tmp_path / "a")["val/loss"])
    (saved,) = (tmp_path / "b").rglob("hparams.yaml")
    hparams = yaml.safe_load(saved.read_text())
    assert hparams["optim"]["learning_rate"] == 0.0123 and hparams["generation"]["max_new_tokens"] == 7
    assert "learning_rate" not in hparams and hparams["lora"] is None
