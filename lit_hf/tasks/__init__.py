"""Task modules: one LightningModule per task family."""

from lit_hf.tasks.causal_lm import CausalLMTask
from lit_hf.tasks.image_classification import ImageClassificationTask
from lit_hf.tasks.sequence_classification import SequenceClassificationTask
from lit_hf.tasks.translation import TranslationTask

__all__ = ["CausalLMTask", "ImageClassificationTask", "SequenceClassificationTask", "TranslationTask"]
