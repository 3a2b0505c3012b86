"""lit_hf: fine-tune and evaluate Hugging Face transformers with PyTorch Lightning."""

import importlib
from typing import TYPE_CHECKING

from lit_hf.errors import ConfigError, LitHFError

if TYPE_CHECKING:
    from lit_hf.data import *  # noqa: F403
    from lit_hf.tasks import *  # noqa: F403

__version__ = "0.1.0"
# Imported on first use, so `python -m lit_hf download` starts without torch and Lightning (0.4 s instead of 5).
_DATA = (
    "GlueDataModule",
    "ImageClassificationDataModule",
    "LanguageModelingDataModule",
    "MultipleChoiceDataModule",
    "SummarizationDataModule",
    "TextClassificationDataModule",
    "TranslationDataModule",
)
_TASKS = (
    "CausalLMTask",
    "ImageClassificationTask",
    "MultipleChoiceTask",
    "SequenceClassificationTask",
    "SummarizationTask",
    "TranslationTask",
)
__all__ = ["ConfigError", "LitHFError", "__version__", *_DATA, *_TASKS]


def __getattr__(name: str) -> type:
    home = "lit_hf.data" if name in _DATA else "lit_hf.tasks" if name in _TASKS else None
    if home is None:
        raise AttributeError(f"module 'lit_hf' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
