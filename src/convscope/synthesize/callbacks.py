"""Loop callbacks that change the image between steps, as the classic papers do:

- `every(n, fn)`: run `fn` after every n-th step;
- `decay(rate)`: L2 decay, x ← (1 − rate)·x in the model's space (Yosinski et al. 2015);
- `blur(sigma)`: Gaussian blur of the image (Yosinski et al.; CS231n every 10 steps);
- `clip_small_norm(percentile)`: pixels whose colour norm is in the lowest `percentile` % go
  to zero in model space (the mean colour): "clipping pixels with small norm" (Yosinski);
- `clamp_to_range()`: keep the image inside [0, 1] (CS231n);
- `project_linf(original, eps)`: projected gradient descent's projection onto the L∞ ball of
  radius `eps` around `original`, and into [0, 1] (Madry et al. 2018).

They act on parameterizations that hold the image directly (`ModelSpaceImage`, `PixelImage`
with no activation); each returns None so the run goes on.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from convscope.errors import UserInputError
from convscope.synthesize.optimize import Callback, StepState
from convscope.synthesize.params import ImageParam, ModelSpaceImage, PixelImage
from convscope.synthesize.transforms import gaussian_blur

__all__ = [
    "blur",
    "clamp_to_range",
    "clip_small_norm",
    "decay",
    "every",
    "project_linf",
]


def _values(param: nn.Module) -> Tensor:
    """The tensor that holds the image itself (in model space for a `ModelSpaceImage`, in
    pixels for a plain `PixelImage`)."""
    if isinstance(param, ModelSpaceImage):
        return param.values
    raw = param.raw if isinstance(param, ImageParam) else param
    plain = not isinstance(param, ImageParam) or (
        param.color is None and param.activation != "sigmoid"
    )
    if isinstance(raw, PixelImage) and plain:
        return raw.pixels
    raise UserInputError(
        "this callback changes the image itself: use a ModelSpaceImage or a PixelImage "
        "without colour decorrelation or sigmoid."
    )


def every(n: int, fn: Callback) -> Callback:
    """`fn` after steps n, 2n, 3n, … (and not otherwise)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserInputError(f"'every' needs a step count of at least 1, got {n!r}.")

    def cb(state: StepState) -> bool | None:
        return fn(state) if state.step % n == 0 else None

    return cb


def decay(rate: float) -> Callback:
    """x ← (1 − rate)·x, pulling the image towards the mean colour (0 in model space)."""
    if not (math.isfinite(rate) and 0 <= rate < 1):
        raise UserInputError(f"the decay must be in [0, 1), got {rate}.")

    def cb(state: StepState) -> None:
        values = _values(state.param)
        with torch.no_grad():
            values.mul_(1.0 - rate)

    return cb


def blur(sigma: float) -> Callback:
    """A Gaussian blur of σ pixels applied to the image itself."""
    if not (math.isfinite(sigma) and sigma > 0):
        raise UserInputError(f"the blur sigma must be a positive number, got {sigma}.")

    def cb(state: StepState) -> None:
        values = _values(state.param)
        with torch.no_grad():
            values.copy_(gaussian_blur(values, sigma))

    return cb


def clip_small_norm(percentile: float) -> Callback:
    """Pixels whose colour vector (in model space) has a norm below the `percentile`-th
    percentile of the image's become 0 (the mean colour); 0 turns it off."""
    if not (math.isfinite(percentile) and 0 <= percentile < 100):
        raise UserInputError(f"the norm percentile must be in [0, 100), got {percentile}.")

    def cb(state: StepState) -> None:
        if percentile == 0:
            return
        values = _values(state.param)
        with torch.no_grad():
            norms = values.norm(dim=1, keepdim=True)  # (B, 1, H, W)
            cut = torch.quantile(norms.flatten(1).double(), percentile / 100, dim=1)
            values.mul_((norms >= cut.to(norms).view(-1, 1, 1, 1)).to(values))

    return cb


def clamp_to_range() -> Callback:
    """Keep the image in [0, 1]."""

    def cb(state: StepState) -> None:
        param = state.param
        if isinstance(param, ModelSpaceImage):
            param.clamp_()
            return
        values = _values(param)
        with torch.no_grad():
            values.clamp_(0.0, 1.0)

    return cb


def project_linf(original: Tensor, eps: float) -> Callback:
    """After each step, the image is moved to the nearest point within `eps` of `original`
    in every pixel (and within [0, 1])."""
    if not (math.isfinite(eps) and 0 < eps <= 1):
        raise UserInputError(f"eps must be in (0, 1], got {eps}.")
    base = original.detach().clone()

    def cb(state: StepState) -> None:
        values = _values(state.param)
        with torch.no_grad():
            lo = (base - eps).clamp(min=0.0).to(values)
            hi = (base + eps).clamp(max=1.0).to(values)
            values.copy_(torch.maximum(torch.minimum(values, hi), lo))

    return cb
