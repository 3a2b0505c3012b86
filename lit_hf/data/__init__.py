"""Data modules: one LightningDataModule per task family."""

from lit_hf.data.language_modeling import LanguageModelingDataModule

__all__ = ["LanguageModelingDataModule"]
