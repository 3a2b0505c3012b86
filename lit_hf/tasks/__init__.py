"""Task modules: one LightningModule per task family."""

from lit_hf.tasks.causal_lm import CausalLMTask
from lit_hf.tasks.image_classification import ImageClassificationTask
from lit_hf.tasks.multiple_choice import MultipleChoiceTask
from lit_hf.tasks.seq2seq import SummarizationTask, TranslationTask
from lit_hf.tasks.text_classification import SequenceClassificationTask

__all__ = [
    "CausalLMTask",
    "ImageClassificationTask",
    "MultipleChoiceTask",
    "SequenceClassificationTask",
    "SummarizationTask",
    "TranslationTask",
]
