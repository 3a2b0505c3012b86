"""Task modules: one LightningModule per task family."""

from lit_hf.tasks.causal_lm import CausalLMTask
from lit_hf.tasks.image_classification import ImageClassificationTask
from lit_hf.tasks.multiple_choice import MultipleChoiceTask
from lit_hf.tasks.sequence_classification import SequenceClassificationTask
from lit_hf.tasks.summarization import SummarizationTask
from lit_hf.tasks.translation import TranslationTask

__all__ = [
    "CausalLMTask",
    "ImageClassificationTask",
    "MultipleChoiceTask",
    "SequenceClassificationTask",
    "SummarizationTask",
    "TranslationTask",
]
