"""Gradient saliency: plain (Simonyan et al. 2014), guided (Springenberg et al. 2015) and
SmoothGrad (Smilkov et al. 2017).

Every map is taken with respect to the image in [0, 1] *as the model sees it* (after
`model.preprocess.geometry`), through the differentiable `model.preprocess.normalize`, so a
map lines up pixel for pixel with that image. All functions follow the attribution contract:

    fn(model, images (B, 3, H, W) in [0, 1], targets (one per image), **options)
        -> (B, H, W) float32 on the CPU, non-negative

They never change the caller's tensors or the model (no hooks left, no `.grad` written).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from convscope.attribute.targets import Target, target_scores
from convscope.errors import UserInputError
from convscope.models.base import ConvModel, check_image_batch
from convscope.probe import Probe

__all__ = [
    "check_attribution_inputs",
    "gradient_map",
    "guided_gradients",
    "guided_map",
    "input_gradients",
    "smoothgrad_map",
]


def _model_dtype(model: ConvModel) -> torch.dtype:
    for p in model.module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def check_attribution_inputs(model: ConvModel, images: Tensor, targets: Sequence[Target]) -> Tensor:
    """Validate an attribution call; return a private copy of `images` as a (B, 3, H, W)
    batch on the model's device and in its dtype (the caller's tensor is never touched)."""
    if not isinstance(model, ConvModel):
        raise UserInputError(f"expected a ConvModel, got {type(model).__name__}.")
    x = check_image_batch(images)
    if x.shape[0] == 0 or x.shape[-1] == 0 or x.shape[-2] == 0:
        raise UserInputError(f"images must not be empty, got shape {tuple(x.shape)}.")
    if isinstance(targets, (str, bytes)) or not isinstance(targets, Sequence):
        raise UserInputError("targets must be a sequence with one target per image.")
    if len(targets) != x.shape[0]:
        raise UserInputError(f"got {len(targets)} targets for {x.shape[0]} images.")
    return x.detach().to(device=model.device, dtype=_model_dtype(model)).clone()


def _grad_of_scores(model: ConvModel, x: Tensor, targets: Sequence[Target]) -> Tensor:
    """d(sum of target scores)/d(x) for a [0, 1] batch `x`; runs under any active Probe rule."""
    x = x.detach().requires_grad_(True)
    scores = target_scores(model, model.preprocess.normalize(x), targets)  # (B,)
    # autograd.grad (not backward) so that no parameter's .grad is written.
    (grad,) = torch.autograd.grad(scores.sum(), x)
    return grad  # (B, 3, H, W)


def input_gradients(
    model: ConvModel,
    images: Tensor,
    targets: Sequence[Target],
    *,
    guided: bool = False,
) -> Tensor:
    """The signed gradient of each image's target score with respect to its pixels in [0, 1]:
    (B, 3, H, W) float32 on the CPU. With `guided`, every ReLU passes back only positive
    gradients at positive inputs (guided backpropagation)."""
    x = check_attribution_inputs(model, images, targets)
    # Images often come from inference mode; gradients need ordinary tensors and grad on.
    with torch.inference_mode(False), torch.enable_grad():
        x = x.clone()
        if guided:
            with Probe(model, [], relu_rule="guided"):
                grad = _grad_of_scores(model, x, targets)
        else:
            grad = _grad_of_scores(model, x, targets)
    return grad.detach().float().cpu()


def _channel_max(grad: Tensor) -> Tensor:
    """(B, 3, H, W) → (B, H, W): the largest magnitude over colour channels."""
    return grad.abs().amax(dim=1)


def gradient_map(model: ConvModel, images: Tensor, targets: Sequence[Target]) -> Tensor:
    """Vanilla gradient saliency (Simonyan, Vedaldi & Zisserman 2014): max over colour
    channels of |d score / d pixel|, (B, H, W)."""
    return _channel_max(input_gradients(model, images, targets))


def guided_gradients(model: ConvModel, images: Tensor, targets: Sequence[Target]) -> Tensor:
    """The signed 3-channel guided-backprop gradient (Springenberg et al. 2015), (B, 3, H, W),
    for display with `convscope.render.heatmaps.signed_gradient_image`.

    Not a true gradient: the ReLU rule changes the backward pass, so gradcheck does not
    apply; tests compare it with the rule's definition instead."""
    return input_gradients(model, images, targets, guided=True)


def guided_map(model: ConvModel, images: Tensor, targets: Sequence[Target]) -> Tensor:
    """Guided backpropagation as a map: max over colour channels of |guided gradient|,
    (B, H, W)."""
    return _channel_max(guided_gradients(model, images, targets))


def smoothgrad_map(
    model: ConvModel,
    images: Tensor,
    targets: Sequence[Target],
    *,
    samples: int = 25,
    noise: float = 0.15,
    generator: torch.Generator | None = None,
    batch_size: int = 16,
) -> Tensor:
    """SmoothGrad (Smilkov et al. 2017): the mean of `gradient_map` over `samples` copies of
    each image with Gaussian noise added, (B, H, W).

    `noise` is σ as a fraction of the input range; pixels live in [0, 1], so σ = `noise`
    (the paper's 10-20 % work well). Noisy copies are not clamped. The noise is drawn on the
    CPU from `generator` (seed it for reproducible maps), one copy at a time, so the result
    does not depend on `batch_size`, the number of copies run together. With samples=1 and
    noise=0 this is exactly `gradient_map`."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise UserInputError(f"samples must be a whole number of at least 1, got {samples!r}.")
    if not isinstance(noise, (int, float)) or not 0.0 <= float(noise) < float("inf"):
        raise UserInputError(f"noise must be a finite number of 0 or more, got {noise!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserInputError(f"batch_size must be at least 1, got {batch_size!r}.")
    x = check_attribution_inputs(model, images, targets)
    b = int(x.shape[0])
    total = torch.zeros(b, *x.shape[-2:], dtype=torch.float32)  # (B, H, W)
    # Copy j of image i is row i * samples + j; rows are processed batch_size at a time.
    rows = [(i, j) for i in range(b) for j in range(samples)]
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        idx = torch.tensor([i for i, _ in chunk])
        # One draw per copy, in order, so the maps do not depend on batch_size.
        eps = torch.stack([torch.randn(x.shape[1:], generator=generator) for _ in chunk])
        noisy = x[idx.to(x.device)] + float(noise) * eps.to(device=x.device, dtype=x.dtype)
        maps = gradient_map(model, noisy, [targets[i] for i, _ in chunk])  # (n, H, W)
        total.index_add_(0, idx, maps)
    return total / samples
