"""The task families: the one place a family is registered (its task and data module classes), read by the package's
exports, the command line's checks and its help. Class paths only, so reading it imports nothing."""

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """A family's classes by import path, and the options the CLI links from its data module to its task."""

    tasks: tuple[str, ...]
    data: tuple[str, ...]
    links: tuple[tuple[str, str], ...] = ()
    """(data option, task option) pairs copied at parse time: text classification's GLUE task picks its metrics."""


# One line per family (names as in data/, tasks/, cache keys and configs). Any task pairs with any data module of its
# own family; `lit_hf.X`, `lit_hf.tasks.X` and `lit_hf.data.X` are these classes.
FAMILIES = {
    "causal_lm": Family(
        tasks=("lit_hf.tasks.causal_lm.CausalLMTask",),
        data=("lit_hf.data.causal_lm.LanguageModelingDataModule",),
    ),
    "text_classification": Family(
        tasks=("lit_hf.tasks.text_classification.SequenceClassificationTask",),
        data=(
            "lit_hf.data.text_classification.TextClassificationDataModule",
            "lit_hf.data.text_classification.GlueDataModule",
        ),
        links=(("task_name", "glue_task"),),
    ),
    "seq2seq": Family(
        tasks=("lit_hf.tasks.seq2seq.TranslationTask", "lit_hf.tasks.seq2seq.SummarizationTask"),
        data=("lit_hf.data.seq2seq.TranslationDataModule", "lit_hf.data.seq2seq.SummarizationDataModule"),
    ),
    "multiple_choice": Family(
        tasks=("lit_hf.tasks.multiple_choice.MultipleChoiceTask",),
        data=("lit_hf.data.multiple_choice.MultipleChoiceDataModule",),
    ),
    "image_classification": Family(
        tasks=("lit_hf.tasks.image_classification.ImageClassificationTask",),
        data=("lit_hf.data.image_classification.ImageClassificationDataModule",),
    ),
}


def class_paths(kind: str) -> list[str]:
    """Every family's task (`kind="tasks"`) or data module (`"data"`) class paths, in table order."""
    return [path for family in FAMILIES.values() for path in getattr(family, kind)]


def exported(kind: str) -> dict[str, str]:
    """Class name -> its module, for the lazy exports of `lit_hf.tasks`, `lit_hf.data` and `lit_hf`."""
    return {path.rpartition(".")[2]: path.rpartition(".")[0] for path in class_paths(kind)}


def load(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def family_of(cls: type) -> str | None:
    """The family whose task or data module `cls` is (or subclasses), read from its bases' paths without importing
    any family; None for a class that is no family's."""
    paths = {f"{base.__module__}.{base.__qualname__}" for base in cls.__mro__}
    for name, family in FAMILIES.items():
        if paths & {*family.tasks, *family.data}:
            return name
    return None


def short(class_path: str) -> str:
    """`lit_hf.tasks.CausalLMTask` for `lit_hf.tasks.causal_lm.CausalLMTask`: the path users type."""
    home = "lit_hf.tasks" if class_path in class_paths("tasks") else "lit_hf.data"
    return f"{home}.{class_path.rpartition('.')[2]}"
