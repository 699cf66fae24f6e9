"""Checks and filters for saliency maps: (H, W) float tensors, larger = more important."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from convscope.errors import UserInputError

__all__ = ["check_map", "gaussian_smooth"]


def check_map(saliency: Tensor, size: tuple[int, int]) -> Tensor:
    """The map as a finite (H, W) float tensor at the image's size (resized bilinearly)."""
    if not isinstance(saliency, Tensor):
        raise UserInputError(f"the saliency map must be a tensor, not {type(saliency).__name__}.")
    s = saliency.detach().float().cpu()
    while s.dim() > 2 and s.shape[0] == 1:
        s = s[0]
    if s.dim() != 2 or 0 in s.shape:
        raise UserInputError(f"the saliency map must have shape (H, W), got {tuple(s.shape)}.")
    if not bool(torch.isfinite(s).all()):
        raise UserInputError("the saliency map contains NaN or infinite values.")
    if tuple(s.shape) != size:
        s = F.interpolate(s[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    return s


def gaussian_smooth(s: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of an (H, W) map with standard deviation `sigma` pixels."""
    if sigma <= 0:
        return s
    h, w = s.shape
    radius = min(math.ceil(3 * sigma), h - 1, w - 1)
    if radius < 1:
        return s
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = F.pad(s[None, None], (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    return x[0, 0]
