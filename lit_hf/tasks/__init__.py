"""Task modules: one LightningModule per task family, imported on first use from lit_hf/families.py's table."""

import importlib

from lit_hf.families import exported

_HOMES = exported("tasks")
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> type:
    if name not in _HOMES:
        raise AttributeError(f"module 'lit_hf.tasks' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
