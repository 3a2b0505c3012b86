"""Data modules: one LightningDataModule per task family."""

from lit_hf.data.language_modeling import LanguageModelingDataModule
from lit_hf.data.text_classification import GlueDataModule, TextClassificationDataModule

__all__ = ["GlueDataModule", "LanguageModelingDataModule", "TextClassificationDataModule"]
