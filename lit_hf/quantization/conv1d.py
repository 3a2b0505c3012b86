"""GPT-2-style `Conv1D` layers as `nn.Linear`, so quantizers that look for Linear layers see them."""

from torch import nn
from transformers.pytorch_utils import Conv1D


def conv1d_to_linear(model: nn.Module) -> int:
    """Replaces every `Conv1D` in `model` with an `nn.Linear` computing the same function; returns how many.

    `Conv1D` stores its weight as (in, out) and computes `x @ W + b`; the Linear gets `W.t()` as a view, so its
    `F.linear(x, weight)` multiplies by the very same (in, out) memory and the outputs are bitwise identical."""
    converted = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                setattr(parent, name, _as_linear(child))
                converted += 1
    return converted


def _as_linear(conv: Conv1D) -> nn.Linear:
    fan_in, fan_out = conv.weight.shape  # (in, out)
    linear = nn.Linear(fan_in, fan_out, bias=conv.bias is not None, device="meta")
    linear.weight = nn.Parameter(conv.weight.detach().t(), requires_grad=conv.weight.requires_grad)
    if conv.bias is not None:
        linear.bias = conv.bias
    return linear.train(conv.training)
