"""lit_hf: fine-tune and evaluate Hugging Face transformers with PyTorch Lightning."""

import importlib
from typing import TYPE_CHECKING

from lit_hf.errors import ConfigError, LitHFError

if TYPE_CHECKING:
    from lit_hf.data import (
        GlueDataModule,
        LanguageModelingDataModule,
        TextClassificationDataModule,
        TranslationDataModule,
    )
    from lit_hf.tasks import CausalLMTask, SequenceClassificationTask, TranslationTask

__version__ = "0.1.0"
__all__ = [
    "CausalLMTask",
    "ConfigError",
    "GlueDataModule",
    "LanguageModelingDataModule",
    "LitHFError",
    "SequenceClassificationTask",
    "TextClassificationDataModule",
    "TranslationDataModule",
    "TranslationTask",
    "__version__",
]
# Imported on first use, so `python -m lit_hf download` starts without torch and Lightning (0.4 s instead of 5).
_HOMES = {
    "GlueDataModule": "lit_hf.data",
    "LanguageModelingDataModule": "lit_hf.data",
    "TextClassificationDataModule": "lit_hf.data",
    "TranslationDataModule": "lit_hf.data",
    "CausalLMTask": "lit_hf.tasks",
    "SequenceClassificationTask": "lit_hf.tasks",
    "TranslationTask": "lit_hf.tasks",
}


def __getattr__(name: str) -> type:
    if name not in _HOMES:
        raise AttributeError(f"module 'lit_hf' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
