"""What a quantization run changed: modules quantized and skipped, by type, with the reason for each skip."""

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any

from torch import nn

from lit_hf.atomic import write_text
from lit_hf.errors import LitHFError

# Layers that hold a weight matrix a quantizer could target; everything else (norms, activations) is not counted.
WEIGHT_LAYERS = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def skip_reason(model: nn.Module, name: str, module: nn.Module, group_size: int | None) -> str | None:
    """Why the built-in methods leave `module` in full precision, or None when they quantize it."""
    if isinstance(module, nn.Embedding):
        return "embedding (a lookup, not a matmul)"
    if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        return "convolution (torchao's methods quantize Linear layers)"
    if not isinstance(module, nn.Linear):
        return "not a Linear layer"
    if _tied_to_embedding(model, module):
        return "tied to the input embeddings (quantizing it would untie them)"
    if group_size and module.in_features % group_size:
        return f"{module.in_features} inputs are not a multiple of group_size {group_size}"
    return None


def is_quantized(module: nn.Module) -> bool:
    """Whether the module's weight is a torchao tensor (quantized) rather than a plain tensor."""
    return type(getattr(module, "weight", None)).__module__.startswith("torchao")


@dataclasses.dataclass
class Coverage:
    """Modules quantized and eligible (every layer holding a weight matrix), by type, and those skipped with why."""

    method: str
    quantized: dict[str, int]
    eligible: dict[str, int]
    skipped: dict[str, list[str]]  # reason -> module names
    calibration: dict[str, Any] | None = None  # a calibrated plug-in's: its batches, split, and what it decided

    @classmethod
    def of(
        cls, model: nn.Module, reasons: dict[str, str | None], method: str, done: set[str] | None = None
    ) -> "Coverage":
        """Counts what `model` holds after quantization; `reasons` says why each skipped module was skipped, `done`
        names the modules a plug-in quantized (else: those holding torchao tensors)."""
        layers = {name: m for name, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS) or is_quantized(m)}
        quantized_names = {n for n, m in layers.items() if (n in done if done is not None else is_quantized(m))}
        quantized = Counter(type(layers[n]).__name__ for n in quantized_names)
        skipped: dict[str, list[str]] = {}
        for name in layers.keys() - quantized_names:
            skipped.setdefault(reasons.get(name) or "left by the quantizer", []).append(name)
        skipped = {reason: sorted(names) for reason, names in skipped.items()}
        return cls(method, dict(quantized), dict(Counter(type(m).__name__ for m in layers.values())), skipped)

    @property
    def fraction(self) -> float:
        return sum(self.quantized.values()) / max(1, sum(self.eligible.values()))

    def line(self) -> str:
        """The console line: how much, of which types, and the skips by reason."""
        done, total = sum(self.quantized.values()), sum(self.eligible.values())
        types = ", ".join(f"{t} {self.quantized.get(t, 0)}/{n}" for t, n in sorted(self.eligible.items()))
        skips = "; ".join(f"{len(names)} {reason}" for reason, names in self.skipped.items())
        return f"quantization {self.method}: {done}/{total} modules ({types})" + (
            f"; skipped: {skips}" if skips else ""
        )

    def check(self) -> None:
        """Refuses a run where nothing was quantized: its metrics would be full precision under a quantized name."""
        if not self.quantized:
            raise LitHFError(f"{self.line()}: nothing was quantized, so the metrics would be full precision.")

    def summary(self) -> dict[str, Any]:
        """The report as `results.json` and `quantization.json` hold it."""
        return {"coverage": self.fraction, **dataclasses.asdict(self)}

    def write(self, folder: Path) -> Path:
        """`quantization.json` in `folder` (the run's log folder, beside `results.json`)."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "quantization.json"
        write_text(path, json.dumps(self.summary(), indent=2, sort_keys=True) + "\n")
        return path


def _tied_to_embedding(model: nn.Module, linear: nn.Linear) -> bool:
    return any(isinstance(m, nn.Embedding) and m.weight is linear.weight for m in model.modules())
