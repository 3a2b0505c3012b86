"""Your own quantizer as a plug-in: the `Quantizer` protocol, and a reference weight fake-quantizer built on
torchao's affine primitives."""

import math
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

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


Reduce = Callable[[Tensor, Literal["min", "max", "sum"]], Tensor]
"""All-reduces a statistic over the processes of the run (the tensor itself on one process) and returns it."""


@runtime_checkable
class CalibratedQuantizer(Quantizer, Protocol):
    """A quantizer that sees calibration batches first (`--model.quantization.calibration_batches=K`).

    lit_hf calls `prepare(model)` once, then for each of this process's calibration batches `observe(batch)` and the
    model's forward on it (no gradients), then `synchronize(reduce)`, then `convert(model)`. Each process sees its
    share of the K batches, so a statistic must be one that `reduce` combines exactly (a min, a max, an integer
    count): then the scales are the same, bit for bit, on 1 and N processes."""

    def prepare(self, model: nn.Module) -> None:
        """Inserts the observers (forward hooks, for example) into `model`."""
        ...

    def observe(self, batch: dict[str, Tensor]) -> None:
        """Called before the forward of each calibration batch (the model's inputs: the attention mask tells
        padding apart)."""
        ...

    def synchronize(self, reduce: Reduce) -> None:
        """Combines the statistics of every process, before `convert`."""
        ...

    def calibration(self) -> dict[str, Any]:
        """What calibration decided, as JSON for `quantization.json` (the reference: each layer's input scale)."""
        ...


Observer = Literal["minmax", "percentile"]

# The percentile observer's histogram bins are the bfloat16 values of |x| (the top 16 bits of its float32 bits):
# fixed before any data is seen, so counts from every process add up exactly.
_BINS = 1 << 15


class FakeQuantizer(WeightFakeQuantizer):
    """`WeightFakeQuantizer`'s weights, and the inputs of the same Linear layers fake-quantized per tensor with a
    scale calibrated on `calibration_batches`: symmetric, scale = bound / ((qmax - qmin) / 2) as torchao's
    `choose_qparams_affine` computes it, where the bound is max|x| over the calibration tokens (`minmax`) or its
    `percentile`-th percentile (`percentile`, read from integer histogram counts over bfloat16-wide bins, taking the
    bin's upper edge). Padding tokens (attention mask 0) are left out of the statistics, except in an
    encoder-decoder model, whose decoder inputs the source's mask does not describe.

    Args:
        activation_bits: Integer width of the inputs, 2 to 8.
        observer: minmax, or percentile.
        percentile: The percentile of |x| that percentile takes as its bound, in (0, 100].
    """

    def __init__(
        self,
        bits: int = 8,
        granularity: Granularity = "per_channel",
        group_size: int = 128,
        skip: list[str] | None = None,
        activation_bits: int = 8,
        observer: Observer = "minmax",
        percentile: float = 99.99,
    ) -> None:
        super().__init__(bits, granularity, group_size, skip)
        if not 2 <= activation_bits <= 8:
            raise ConfigError(f"FakeQuantizer activation_bits must be 2 to 8, got {activation_bits}.")
        if not 0 < percentile <= 100:
            raise ConfigError(f"FakeQuantizer percentile must be in (0, 100], got {percentile}.")
        self.activation_bits, self.observer, self.percentile = activation_bits, observer, percentile
        self.absmax: dict[str, Tensor] = {}  # layer -> max |x| seen (float32 scalar)
        self.counts: dict[str, Tensor] = {}  # layer -> int64 histogram of |x| over the bfloat16 bins
        self.scales: dict[str, Tensor] = {}
        self._mask: Tensor | None = None
        self._masks = True  # whether the attention mask describes every layer's tokens
        self._hooks: list[Any] = []

    def prepare(self, model: nn.Module) -> None:
        self._masks = not getattr(getattr(model, "config", None), "is_encoder_decoder", False)
        for name in self._eligible(model):
            module = model.get_submodule(name)
            self.absmax[name], self.counts[name] = torch.zeros(()), torch.zeros(_BINS, dtype=torch.int64)
            self._hooks.append(module.register_forward_pre_hook(partial(self._record, name)))

    def observe(self, batch: dict[str, Tensor]) -> None:
        mask = batch.get("attention_mask") if self._masks else None
        # (batch, seq), or multiple choice's (batch, choices, seq) as its model flattens it: (batch * choices, seq)
        self._mask = None if mask is None else mask.bool().reshape(-1, mask.shape[-1])

    def synchronize(self, reduce: Reduce) -> None:
        for name in self.absmax:
            self.absmax[name], self.counts[name] = reduce(self.absmax[name], "max"), reduce(self.counts[name], "sum")
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self.scales = {name: self._scale(self._bound(name)) for name in self.absmax}

    @torch.no_grad()
    def convert(self, model: nn.Module) -> Iterable[str]:
        if not self.scales:
            raise ConfigError("FakeQuantizer calibrates its input scales: set quantization.calibration_batches.")
        done = list(super().convert(model))
        for name in done:
            scale = self.scales[name]
            model.get_submodule(name).register_forward_pre_hook(lambda _, args, s=scale: (self._fake(args[0], s),))
        return done

    def calibration(self) -> dict[str, Any]:
        return {"input_scales": {name: scale.item() for name, scale in self.scales.items()}}

    def _eligible(self, model: nn.Module) -> list[str]:
        tied = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
        return [
            name
            for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and name not in self.skip and id(m.weight) not in tied and self._block(m.weight)
        ]

    @torch.no_grad()
    def _record(self, name: str, module: nn.Module, args: tuple[Tensor, ...]) -> None:
        x = args[0]
        if self._mask is not None and x.dim() > 2 and x.shape[:2] == self._mask.shape:  # (batch, seq, features)
            x = x[self._mask]  # the real tokens' rows only
        x = x.detach().abs().float().flatten()
        if x.numel():
            self.absmax[name] = torch.maximum(self.absmax[name], x.max().cpu())
            self.counts[name] += torch.bincount((x.view(torch.int32) >> 16).cpu(), minlength=_BINS)[:_BINS]

    def _bound(self, name: str) -> Tensor:
        if self.observer == "minmax":
            return self.absmax[name]
        counts = self.counts[name]
        rank = math.ceil(self.percentile / 100 * int(counts.sum()))  # the rank-th smallest |x| lies in the bin
        upper = int(torch.searchsorted(counts.cumsum(0), torch.tensor(rank))) + 1
        bound = torch.tensor(upper << 16, dtype=torch.int32).view(torch.float32)  # the bin's upper edge
        return torch.minimum(bound, self.absmax[name])

    def _scale(self, bound: Tensor) -> Tensor:
        from torchao.quantization.quant_primitives import MappingType, choose_qparams_affine_with_min_max

        qmin, qmax = -(2 ** (self.activation_bits - 1)), 2 ** (self.activation_bits - 1) - 1
        low, high = -bound.reshape(1), bound.reshape(1)
        scale, _ = choose_qparams_affine_with_min_max(
            low, high, MappingType.SYMMETRIC, [1], torch.int8, qmin, qmax, eps=torch.finfo(torch.float32).eps
        )
        return scale.reshape(())

    def _fake(self, x: Tensor, scale: Tensor) -> Tensor:
        """x rounded to the per-tensor integer grid of `scale`, back in its own dtype."""
        from torchao.quantization.quant_primitives import dequantize_affine, quantize_affine

        qmin, qmax = -(2 ** (self.activation_bits - 1)), 2 ** (self.activation_bits - 1) - 1
        scale, zero = scale.to(x.device).reshape(1), torch.zeros(1, dtype=torch.int32, device=x.device)
        q = quantize_affine(x, tuple(x.shape), scale, zero, torch.int8, qmin, qmax)
        return dequantize_affine(q, tuple(x.shape), scale, zero, torch.int8, qmin, qmax, output_dtype=x.dtype)
