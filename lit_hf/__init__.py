"""lit_hf: fine-tune and evaluate Hugging Face transformers with PyTorch Lightning."""

from lit_hf.data import (
    GlueDataModule,
    LanguageModelingDataModule,
    MultipleChoiceDataModule,
    SummarizationDataModule,
    TextClassificationDataModule,
    TranslationDataModule,
)
from lit_hf.errors import ConfigError, LitHFError
from lit_hf.tasks import (
    CausalLMTask,
    MultipleChoiceTask,
    SequenceClassificationTask,
    SummarizationTask,
    TranslationTask,
)

__version__ = "0.1.0"
__all__ = [
    "CausalLMTask",
    "ConfigError",
    "GlueDataModule",
    "LanguageModelingDataModule",
    "LitHFError",
    "MultipleChoiceDataModule",
    "MultipleChoiceTask",
    "SequenceClassificationTask",
    "SummarizationDataModule",
    "SummarizationTask",
    "TextClassificationDataModule",
    "TranslationDataModule",
    "TranslationTask",
    "__version__",
]
