"""lit_hf: fine-tune and evaluate Hugging Face transformers with PyTorch Lightning."""

from lit_hf.data import LanguageModelingDataModule, TranslationDataModule
from lit_hf.errors import ConfigError, LitHFError
from lit_hf.tasks import CausalLMTask, TranslationTask

__version__ = "0.1.0"
__all__ = [
    "CausalLMTask",
    "ConfigError",
    "LanguageModelingDataModule",
    "LitHFError",
    "TranslationDataModule",
    "TranslationTask",
    "__version__",
]
