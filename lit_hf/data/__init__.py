"""Data modules: one LightningDataModule per task family."""

from lit_hf.data.image_classification import ImageClassificationDataModule
from lit_hf.data.language_modeling import LanguageModelingDataModule
from lit_hf.data.multiple_choice import MultipleChoiceDataModule
from lit_hf.data.summarization import SummarizationDataModule
from lit_hf.data.text_classification import GlueDataModule, TextClassificationDataModule
from lit_hf.data.translation import TranslationDataModule

__all__ = [
    "GlueDataModule",
    "ImageClassificationDataModule",
    "LanguageModelingDataModule",
    "MultipleChoiceDataModule",
    "SummarizationDataModule",
    "TextClassificationDataModule",
    "TranslationDataModule",
]
