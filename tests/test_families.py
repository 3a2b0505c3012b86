"""lit_hf/families.py is the one place a family is registered: the exports, the CLI's checks and its help follow it."""

import importlib
import inspect
import pkgutil

import lightning as L
import pytest

import lit_hf
import lit_hf.data
import lit_hf.tasks
from lit_hf import checks, families
from lit_hf.cli.help import top_help
from lit_hf.errors import ConfigError, LitHFError


def defined_in(package: object, base: type) -> set[str]:
    """The concrete `base` subclasses defined in the package's modules, found by importing each one."""
    found = set()
    for info in pkgutil.iter_modules(package.__path__, f"{package.__name__}."):
        for name, value in vars(importlib.import_module(info.name)).items():
            if inspect.isclass(value) and issubclass(value, base) and value.__module__ == info.name:
                if not inspect.isabstract(value) and not name.startswith("_"):
                    found.add(f"{info.name}.{name}")
    return found


def test_every_task_and_data_module_is_registered_and_exported() -> None:
    tasks, data = families.class_paths("tasks"), families.class_paths("data")
    bases = {"lit_hf.tasks.base.TransformersTask", "lit_hf.tasks.seq2seq.Seq2SeqTask"}  # skeletons, not families
    bases |= {"lit_hf.data.base.DataModule", "lit_hf.data.seq2seq.Seq2SeqDataModule"}
    assert set(tasks) == defined_in(lit_hf.tasks, L.LightningModule) - bases
    assert set(data) == defined_in(lit_hf.data, L.LightningDataModule) - bases
    for path, home in [(p, lit_hf.tasks) for p in tasks] + [(p, lit_hf.data) for p in data]:
        module, _, name = path.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        assert getattr(home, name) is cls and getattr(lit_hf, name) is cls and name in home.__all__
    with pytest.raises(AttributeError, match="no attribute 'NoSuchTask'"):
        lit_hf.tasks.NoSuchTask  # noqa: B018


def test_a_task_runs_on_the_data_of_its_own_family() -> None:
    load = families.load
    causal, classifier = load("lit_hf.tasks.CausalLMTask"), load("lit_hf.tasks.SequenceClassificationTask")
    lm_data, glue = load("lit_hf.data.LanguageModelingDataModule"), load("lit_hf.data.GlueDataModule")
    checks.check_family(causal, lm_data)
    checks.check_family(classifier, glue)
    checks.check_family(load("lit_hf.tasks.SummarizationTask"), load("lit_hf.data.TranslationDataModule"))
    own = type("OwnTask", (causal,), {})  # a user's subclass keeps its family; a class of no family is not checked
    assert families.family_of(own) == "causal_lm" and families.family_of(L.LightningModule) is None
    checks.check_family(L.LightningModule, glue)
    with pytest.raises(ConfigError) as error:
        checks.check_family(own, glue)
    assert str(error.value) == (
        "--data=GlueDataModule is a text_classification data module and --model=OwnTask a causal_lm "
        "task; give the data module of the task's family (lit_hf.data.LanguageModelingDataModule)."
    )


def test_predict_names_the_familys_task_that_predicts() -> None:
    causal = families.load("lit_hf.tasks.CausalLMTask")
    silent = type("SilentTask", (causal,), {"predict_step": L.LightningModule.predict_step})
    with pytest.raises(LitHFError, match=r"SilentTask has nothing to predict .*\(lit_hf\.tasks\.CausalLMTask\)\.$"):
        checks.check_predicts(silent, families.load("lit_hf.data.LanguageModelingDataModule"))


def test_top_help_lists_every_family_and_its_classes() -> None:
    text = top_help()
    for name, family in families.FAMILIES.items():
        assert f"  {name} " in text
        for path in (*family.tasks, *family.data):
            short = families.short(path)
            assert short in text and families.load(short) is families.load(path)


def test_a_misspelt_class_gets_the_close_exported_one(capsys: pytest.CaptureFixture[str]) -> None:
    """The classes of `lit_hf.tasks` are imported on first use, and the close matches still come from all of them."""
    from lit_hf.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--model=lit_hf.tasks.CausalLM", "--print_config"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "lit_hf: error: --model: there is no class lit_hf.tasks.CausalLM; did you mean lit_hf.tasks.CausalLMTask or "
        "lit_hf.tasks.TranslationTask?"
    )
