"""lit_hf: fine-tune and evaluate Hugging Face transformers with PyTorch Lightning."""

from lit_hf.data import (
    GlueDataModule,
    ImageClassificationDataModule,
    LanguageModelingDataModule,
    TextClassificationDataModule,
    TranslationDataModule,
)
from lit_hf.errors import ConfigError, LitHFError
from lit_hf.tasks import CausalLMTask, ImageClassificationTask, SequenceClassificationTask, TranslationTask

__version__ = "0.1.0"
__all__ = [
    "CausalLMTask",
    "ConfigError",
    "GlueDataModule",
    "ImageClassificationDataModule",
    "ImageClassificationTask",
    "LanguageModelingDataModule",
    "LitHFError",
    "SequenceClassificationTask",
    "TextClassificationDataModule",
    "TranslationDataModule",
    "TranslationTask",
    "__version__",
]
