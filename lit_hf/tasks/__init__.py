"""Task modules: one LightningModule per task family."""

from lit_hf.tasks.causal_lm import CausalLMTask

__all__ = ["CausalLMTask"]
