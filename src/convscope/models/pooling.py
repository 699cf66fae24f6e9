"""Swapping a network's pooling: Gatys et al. replaced VGG's max pooling with average pooling,
which gives smoother gradients for texture synthesis and style transfer."""

from __future__ import annotations

import copy
from typing import Literal

from torch import nn

from convscope.errors import UserInputError
from convscope.models.base import ConvModel

__all__ = ["POOLINGS", "with_pooling"]

POOLINGS: tuple[str, ...] = ("max", "avg")


def _swap(module: nn.Module) -> int:
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.MaxPool2d):
            if child.dilation not in (1, (1, 1)) or child.return_indices:
                continue  # no average-pooling equivalent; kept as it is
            avg = nn.AvgPool2d(
                child.kernel_size,  # type: ignore[arg-type]
                child.stride,  # type: ignore[arg-type]
                child.padding,  # type: ignore[arg-type]
                ceil_mode=child.ceil_mode,
                count_include_pad=False,
            )
            setattr(module, name, avg)
            count += 1
        else:
            count += _swap(child)
    return count


def with_pooling(model: ConvModel, pooling: Literal["max", "avg"] | str) -> ConvModel:
    """`model` itself for "max"; for "avg", a copy whose `nn.MaxPool2d` layers are
    `nn.AvgPool2d` with the same kernel, stride and padding (the same dotted names, so layer
    names and aliases still apply). The caller's model is not changed."""
    if pooling == "max":
        return model
    if pooling != "avg":
        raise UserInputError(f"pooling must be max or avg, got {pooling!r}.")
    module = copy.deepcopy(model.module)
    _swap(module)
    return model.with_module(module)
