"""Your own quantizer as a plug-in: the `Quantizer` protocol, and a reference weight fake-quantizer built on
torchao's affine primitives."""

from collections.abc import Iterable
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import nn

from lit_hf.errors import ConfigError


@runtime_checkable
class Quantizer(Protocol):
    """What `--model.quantization.quantizer=my_pkg.MyQuantizer` names (its `__init__` options under `init_args`).

    lit_hf loads the model (merging LoRA adapters, turning GPT-2's `Conv1D` layers into `nn.Linear`), calls
    `convert` once before the first evaluation batch, and then scores the model with the family's exact metrics;
    with `compare_full_precision` it scores an untouched copy on the same batches too."""

    def convert(self, model: nn.Module) -> Iterable[str]:
        """Quantizes `model` in place (real or fake quantization, any number format); returns the names (as in
        `model.named_modules()`) of the modules it quantized, for the coverage report."""
        ...


Granularity = Literal["per_tensor", "per_channel", "per_group"]


class WeightFakeQuantizer:
    """Symmetric integer fake quantization of every Linear weight: w -> dequantize(quantize(w)), kept in the
    weight's dtype, so the model runs as before with the rounding error of the number format.

    Scales come from torchao's `choose_qparams_affine` (scale = max|w| / ((qmax - qmin) / 2) per block), the
    rounding from `quantize_affine` / `dequantize_affine`.

    Args:
        bits: Integer width, 2 to 8 (int8: -128..127).
        granularity: One scale per tensor, per output channel (row), or per group of `group_size` inputs in a row.
        group_size: Inputs per scale with per_group; rows whose width it does not divide are left alone.
        skip: Module names left in full precision, e.g. ["classifier"]. Heads tied to the input embeddings are
            always left alone (rounding them would round the embeddings too).
    """

    def __init__(
        self,
        bits: int = 8,
        granularity: Granularity = "per_channel",
        group_size: int = 128,
        skip: list[str] | None = None,
    ) -> None:
        if not 2 <= bits <= 8:
            raise ConfigError(f"WeightFakeQuantizer bits must be 2 to 8, got {bits}.")
        if group_size < 1:
            raise ConfigError(f"WeightFakeQuantizer group_size must be positive, got {group_size}.")
        self.bits, self.granularity, self.group_size, self.skip = bits, granularity, group_size, set(skip or ())

    @torch.no_grad()
    def convert(self, model: nn.Module) -> Iterable[str]:
        done, tied = [], {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
        for name, module in model.named_modules():
            if not isinstance(module, nn.Linear) or name in self.skip or id(module.weight) in tied:
                continue  # a head tied to the input embeddings would change them too
            if self._block(module.weight) is not None:
                module.weight.copy_(self.fake_quantize(module.weight))
                done.append(name)
        return done

    def fake_quantize(self, weight: torch.Tensor) -> torch.Tensor:
        """`weight` (out, in) rounded to the integer grid of its block's scale, back in its own dtype."""
        from torchao.quantization.quant_primitives import (
            MappingType,
            choose_qparams_affine,
            dequantize_affine,
            quantize_affine,
        )

        block, qmin, qmax = self._block(weight), -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1
        scale, zero = choose_qparams_affine(weight, MappingType.SYMMETRIC, block, torch.int8, qmin, qmax)
        q = quantize_affine(weight, block, scale, zero, torch.int8, qmin, qmax)
        return dequantize_affine(q, block, scale, zero, torch.int8, qmin, qmax, output_dtype=weight.dtype)

    def _block(self, weight: torch.Tensor) -> tuple[int, int] | None:
        rows, cols = weight.shape
        if self.granularity == "per_tensor":
            return (rows, cols)
        if self.granularity == "per_channel":
            return (1, cols)
        return (1, self.group_size) if cols % self.group_size == 0 else None
