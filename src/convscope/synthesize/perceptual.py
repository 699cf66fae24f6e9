"""The perceptual losses of texture synthesis, style transfer and fast style networks (Gatys et
al. 2015, 2016; Johnson et al. 2016), built from the engine's objectives, with one
normalization rule so that the default weights work at any image size and any layer set.

    grams = style_grams(model, [starry_night], STYLE_LAYERS)          # targets, computed once
    feats = content_features(model, golden_gate, CONTENT_LAYERS)
    objective = perceptual(content=feats, grams=grams, content_weight=5, style_weight=100,
                           tv_weight=1e-3)
    # → −5 · content − 100 · style − 0.001 · tv, reported as "content", "style", "tv"

The rule (every term is free of units and of the image's size):

- **content** = the mean over the content layers of ||F − F₀||² / ||F₀||²: each layer's
  squared feature error relative to the target's own energy (`feature_match`); 1 for an
  all-zero activation, whatever the layer's size or scale.
- **style** = the mean over the style layers of ||G − A||² / ||A||², where G = F Fᵀ / (H·W)
  (`gram_matrix`, averaged over positions so it does not grow with the image) and A is the
  style's Gram matrix (`gram_match`); layers whose raw Gram values differ by orders of
  magnitude (relu1_1 against relu5_1 on 0–255 VGG features) weigh the same.
- **tv** = the mean over pixels and channels of (Δx² + Δy²), the squared neighbour
  differences of the image in 0–255 levels: neural-style's squared total variation, averaged
  instead of summed (a typical photograph scores about 100–300).

Several styles blend as in neural-style: one target Gram matrix per layer, Σₖ wₖ Aₖ with the
weights normalized to sum 1. With region masks each style keeps its own target and is
matched on its region only (`gram_match(mask=...)`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from convscope.errors import UserInputError
from convscope.models.base import ConvModel
from convscope.synthesize.objectives import (
    Inputs,
    Objective,
    feature_match,
    gram_match,
    gram_matrix,
    total_variation,
)

__all__ = [
    "CONTENT_LAYERS",
    "STYLE_LAYERS",
    "StyleTarget",
    "blend_weights",
    "check_size",
    "content_features",
    "content_loss",
    "current_losses",
    "min_side",
    "perceptual",
    "style_grams",
    "style_loss",
    "tv_levels",
]

STYLE_LAYERS: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
"""Gatys et al.'s style layers (VGG names), neural-style's default."""
CONTENT_LAYERS: tuple[str, ...] = ("relu4_2",)
"""Gatys et al.'s content layer, neural-style's default."""


def _features(model: ConvModel, image: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
    """`layers`' activations for an image (1, 3, H, W) in [0, 1], out of inference mode."""
    from convscope.probe import capture

    x = model.preprocess.normalize(image.detach().float().to(model.device))
    try:
        feats = capture(model, x, list(layers))
    except RuntimeError as exc:  # a layer's input smaller than its kernel
        h, w = int(image.shape[-2]), int(image.shape[-1])
        first = str(exc).strip().splitlines()[0]
        raise UserInputError(f"the {w}x{h} image is too small for these layers: {first}") from None
    return {k: v.clone() for k, v in feats.items()}


def min_side(model: ConvModel, layers: Sequence[str]) -> dict[str, int]:
    """The smallest image side, in pixels, at which each layer still has a position: its
    stride (16 px for VGG's relu5_1)."""
    from convscope.probe import receptive_fields

    fields = receptive_fields(model, list(layers), 224)
    return {n: (1 if f is None else int(max(f.stride))) for n, f in fields.items()}


def check_size(model: ConvModel, layers: Sequence[str], size: tuple[int, int], what: str) -> None:
    """A one-sentence error when an image of `size` (H, W) is too small for a layer."""
    need = min_side(model, layers)
    layer = max(need, key=lambda n: need[n])
    if min(size) < need[layer]:
        raise UserInputError(
            f"{layer} needs at least {need[layer]} px, but the {what} is {size[1]}x{size[0]}; "
            "make it larger or leave the deepest layers out."
        )


def content_features(model: ConvModel, image: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
    """The content targets F₀: `layers`' activations (1, C, h, w) for `image` (1, 3, H, W)."""
    return _features(model, image, layers)


def blend_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    """Style blend weights normalized to sum 1 (equal when None). Zero weights are allowed;
    negative or non-finite ones, all zeros, or a count other than the styles' are errors."""
    if weights is None:
        return [1.0 / count] * count
    values = [float(w) for w in weights]
    if len(values) != count:
        raise UserInputError(
            f"there are {len(values)} style blend weights for {count} style image"
            f"{'s' if count != 1 else ''}; give one weight per style."
        )
    if any(not math.isfinite(w) or w < 0 for w in values):
        raise UserInputError("style blend weights must be 0 or more.")
    total = sum(values)
    if total <= 0:
        raise UserInputError("at least one style blend weight must be above 0.")
    return [w / total for w in values]


@dataclass(frozen=True)
class StyleTarget:
    """What one style term matches: a Gram matrix per layer, on an optional region."""

    grams: Mapping[str, Tensor]  # layer → (1, C, C)
    weight: float = 1.0
    mask: Tensor | None = None  # (H, W) in [0, 1] over the output


def style_grams(
    model: ConvModel,
    styles: Sequence[Tensor],
    layers: Sequence[str],
    weights: Sequence[float] | None = None,
) -> dict[str, Tensor]:
    """The target Gram matrices (1, C, C) per layer: Σₖ wₖ Aₖ over the style images (each
    (1, 3, H, W) in [0, 1], any size), the weights normalized to sum 1 (`blend_weights`)."""
    if not styles:
        raise UserInputError("there is no style image.")
    ws = blend_weights(weights, len(styles))
    out: dict[str, Tensor] = {}
    for w, image in zip(ws, styles, strict=True):
        feats = _features(model, image, layers)
        for layer in layers:
            g = gram_matrix(feats[layer].float())
            out[layer] = w * g if layer not in out else out[layer] + w * g
    return out


def content_loss(features: Mapping[str, Tensor]) -> Objective:
    """The mean over layers of ||F − F₀||² / ||F₀||² (a penalty, labelled "content")."""
    terms = [feature_match(layer, f) for layer, f in features.items()]
    if not terms:
        raise UserInputError("there is no content layer.")
    return (sum(terms[1:], terms[0]) / len(terms)).named("content")


def style_loss(targets: Sequence[StyleTarget]) -> Objective:
    """Each target's mean over layers of ||G − A||² / ||A||², weighted by its `weight`
    (a penalty, labelled "style")."""
    parts: list[Objective] = []
    for t in targets:
        if not t.grams:
            raise UserInputError("there is no style layer.")
        terms = [gram_match(layer, g, mask=t.mask) for layer, g in t.grams.items()]
        parts.append(t.weight * sum(terms[1:], terms[0]) / len(terms))
    if not parts:
        raise UserInputError("there is no style image.")
    return sum(parts[1:], parts[0]).named("style")


def tv_levels() -> Objective:
    """The mean over pixels and channels of Δx² + Δy² in 0–255 levels (a penalty): 255² times
    `total_variation(2)` on the [0, 1] image."""
    return (255.0**2 * total_variation(2.0)).named("tv")


def perceptual(
    *,
    content: Mapping[str, Tensor] | None,
    styles: Sequence[StyleTarget],
    content_weight: float,
    style_weight: float,
    tv_weight: float,
) -> Objective:
    """The objective to maximize: −content_weight·content − style_weight·style − tv_weight·tv
    (terms with weight 0, or without targets, left out)."""
    parts: list[Objective] = []
    if content and content_weight > 0:
        parts.append(-content_weight * content_loss(content))
    if styles and style_weight > 0:
        parts.append(-style_weight * style_loss(styles))
    if tv_weight > 0:
        parts.append(-tv_weight * tv_levels())
    if not parts:
        raise UserInputError("every loss has weight 0; give a style or content weight above 0.")
    return sum(parts[1:], parts[0])


def current_losses(
    model: ConvModel,
    image: Tensor,
    objective: Objective,
) -> dict[str, float]:
    """Each term's loss for `image` (1, 3, H, W) in [0, 1], in float32 with the whole image
    (for reports and benchmarks, outside the loop)."""
    from convscope.probe import Probe

    layers = sorted(objective.layers)
    x = image.detach().float().to(model.device)
    with torch.no_grad(), Probe(model, layers, stop_early=True) as probe:
        probe.run(model.preprocess.normalize(x))
        acts = dict(probe.activations)
    value, losses = objective.evaluate(Inputs(acts, x, None, model.preprocess))
    return {"loss": float(-value), **{k: float(v) for k, v in losses.items()}}
