"""Model surgery that keeps what a network computes: folding eval-mode BatchNorms into the
convolutions before them (the same affine map, one pass fewer over every activation).

Each fold is checked on a random probe before it is kept, so a convolution subclass whose
forward does not use its weight as a convolution is left alone. The result equals the
original up to float rounding.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from convscope.models.graph import Traced

__all__ = ["fold_batchnorms", "fold_into"]


def fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> bool:
    """Fold `bn` into `conv`'s weight and bias, if the folded conv reproduces bn(conv(z)) on a
    random probe (a conv subclass whose forward does not use them as a conv is left alone)."""
    assert bn.running_mean is not None and bn.running_var is not None
    k = max(int(d) for d in conv.weight.shape[-2:])
    z = torch.randn(
        1, conv.in_channels, 2 * k + 3, 2 * k + 3, generator=torch.Generator().manual_seed(0)
    ).to(conv.weight)
    with torch.no_grad():
        try:
            want = bn(conv(z))
        except Exception:
            return False
        old_weight, old_bias = conv.weight.detach().clone(), conv.bias
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale
        if bn.bias is not None:
            shift = shift + bn.bias
        bias = shift if conv.bias is None else conv.bias * scale + shift
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        conv.bias = nn.Parameter(bias.detach().clone())
        got = conv(z)
        tol = 1e-4 * float(want.abs().max()) + 1e-5
        if got.shape == want.shape and float((got - want).abs().max()) <= tol:
            return True
        conv.weight.copy_(old_weight)
        conv.bias = old_bias
    return False


def fold_batchnorms(module: nn.Module) -> int:
    """Fold every eval-mode BatchNorm2d that only follows a plain convolution into it, in
    place (work on a copy of a model you want to keep): each folded BN becomes an
    `nn.Identity`. Returns how many were folded; a module fx cannot trace is left alone."""
    traced = Traced.trace(module)
    if traced is None:
        return 0
    folded = 0
    for node in traced.nodes:
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        bn = traced.modules[str(node.target)]
        src = node.args[0]
        if not (
            type(bn) is nn.BatchNorm2d
            and not bn.training
            and bn.running_mean is not None
            and bn.running_var is not None
            and isinstance(src, fx.Node)
            and src.op == "call_module"
            and len(src.users) == 1
        ):
            continue
        conv = traced.modules[str(src.target)]
        if not isinstance(conv, nn.Conv2d) or not fold_into(conv, bn):
            continue
        parent_name, _, name = str(node.target).rpartition(".")
        parent = traced.modules[parent_name] if parent_name else module
        setattr(parent, name, nn.Identity())
        folded += 1
    return folded
