"""The built-in post-training quantization methods: torchao's configs that run on the CPU, applied to Linear layers."""

from typing import Any

from torch import nn

from lit_hf.errors import LitHFError
from lit_hf.options import QuantizationOptions
from lit_hf.quantization.conv1d import conv1d_to_linear
from lit_hf.quantization.coverage import Coverage, skip_reason

INSTALL = 'quantization needs torchao: pip install -e ".[quant]" (or pip install "torchao>=0.18").'


def torchao_quantization() -> Any:
    """`torchao.quantization`, or one line saying how to install it."""
    try:
        import torchao.quantization as quantization
    except ImportError as error:
        raise LitHFError(INSTALL) from error
    return quantization


def torchao_config(options: QuantizationOptions) -> Any:
    """The torchao config of `options.method` (its bits and group size where it has them)."""
    import torch

    q = torchao_quantization()
    from torchao.quantization.granularity import PerAxis, PerGroup, PerRow

    if options.method == "int8_weight_only":
        return q.Int8WeightOnlyConfig(granularity=PerGroup(options.group_size) if options.group_size else PerRow())
    if options.method == "int8_dynamic_activation_int8_weight":
        return q.Int8DynamicActivationInt8WeightConfig()
    if options.method == "float8_weight_only":
        return q.Float8WeightOnlyConfig()
    granularity = PerGroup(options.group_size) if options.group_size else PerAxis(0)
    return q.IntxWeightOnlyConfig(weight_dtype=getattr(torch, f"int{options.bits}"), granularity=granularity)


def quantize_model(model: nn.Module, options: QuantizationOptions) -> Coverage:
    """Quantizes `model` in place with the built-in method of `options` (or its `quantizer` plug-in), after turning
    its `Conv1D` layers into `nn.Linear`; returns what was quantized and what was skipped, and why."""
    conv1d_to_linear(model)
    if options.quantizer is not None:
        done = set(options.quantizer.convert(model))
        return Coverage.of(model, {}, type(options.quantizer).__name__, done)
    reasons = {name: skip_reason(model, name, module, options.group_size) for name, module in model.named_modules()}
    chosen = {name for name, reason in reasons.items() if reason is None}
    q = torchao_quantization()
    q.quantize_(model, torchao_config(options), filter_fn=lambda module, name: name in chosen)
    return Coverage.of(model, reasons, options.method)
