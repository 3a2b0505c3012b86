"""lit_hf: fine-tune and evaluate Hugging Face transformers with PyTorch Lightning."""

import importlib

from lit_hf.console import quiet_imports
from lit_hf.errors import ConfigError, LitHFError
from lit_hf.families import exported

__version__ = "0.1.0"
quiet_imports()  # torchao's import lines, before anything imports transformers
# Every family's task and data module (lit_hf/families.py), imported on first use, so that `python -m lit_hf download`
# starts without torch and Lightning (0.4 s instead of 5); the activation statistics callback too.
_HOMES = exported("tasks") | exported("data") | {"ActivationStatistics": "lit_hf.activation_stats"}
__all__ = ["ConfigError", "LitHFError", "__version__", *sorted(_HOMES)]


def __getattr__(name: str) -> type:
    if name not in _HOMES:
        raise AttributeError(f"module 'lit_hf' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
