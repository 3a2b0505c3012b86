"""Data modules: one LightningDataModule per task family."""

from lit_hf.data.causal_lm import LanguageModelingDataModule
from lit_hf.data.image_classification import ImageClassificationDataModule
from lit_hf.data.multiple_choice import MultipleChoiceDataModule
from lit_hf.data.seq2seq import SummarizationDataModule, TranslationDataModule
from lit_hf.data.text_classification import GlueDataModule, TextClassificationDataModule

__all__ = [
    "GlueDataModule",
    "ImageClassificationDataModule",
    "LanguageModelingDataModule",
    "MultipleChoiceDataModule",
    "SummarizationDataModule",
    "TextClassificationDataModule",
    "TranslationDataModule",
]
