"""The attribution methods by name, and running several of them on one image.

Every method follows the contract of `convscope.attribute`:
`fn(model, images (B, 3, H, W) in [0, 1] as the model sees them, targets, **options) -> (B, H, W)`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from convscope.attribute.gradcam import gradcam_map
from convscope.attribute.gradients import gradient_map, guided_gradients, guided_map, smoothgrad_map
from convscope.attribute.occlusion import occlusion_map
from convscope.attribute.targets import ClassTarget, Target
from convscope.errors import UnknownNameError, UserInputError
from convscope.models.base import ConvModel

__all__ = [
    "METHODS",
    "METHOD_NAMES",
    "AttributionFn",
    "class_probability",
    "explain_image",
    "method_function",
    "method_options",
    "seen_images",
]

AttributionFn = Callable[..., Tensor]
"""`fn(model, images (B, 3, H, W), targets, **options) -> (B, H, W)`; see `convscope.attribute`."""

METHOD_NAMES: tuple[str, ...] = ("gradient", "guided", "smoothgrad", "gradcam", "occlusion")
"""The methods' names, in the order the CLI lists them."""

METHODS: dict[str, AttributionFn] = dict(
    zip(
        METHOD_NAMES,
        (gradient_map, guided_map, smoothgrad_map, gradcam_map, occlusion_map),
        strict=True,
    )
)


def method_function(
    method: str | AttributionFn, registry: Mapping[str, AttributionFn] | None = None
) -> tuple[str, AttributionFn]:
    """A method name (looked up in `registry`, by default `METHODS`) or a callable →
    (name, function)."""
    if callable(method) and not isinstance(method, str):
        return getattr(method, "__name__", "custom"), method
    table = METHODS if registry is None else registry
    if method not in table:
        raise UnknownNameError("method", str(method), list(table))
    return str(method), table[method]


def method_options(
    method: str, options: Mapping[str, Any], *, strict: bool = True
) -> dict[str, Any]:
    """The subset of `options` that `method` takes. With `strict`, an option it does not take
    raises a one-sentence error; otherwise such options are dropped (the CLI passes one set of
    options to several methods)."""
    _, fn = method_function(method)
    params = inspect.signature(fn).parameters
    takes = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    unknown = [k for k in options if k not in takes]
    if strict and unknown:
        valid = ", ".join(sorted(takes)) or "none"
        raise UserInputError(
            f"method {method!r} takes no option {unknown[0]!r} (its options: {valid})."
        )
    return {k: v for k, v in options.items() if k in takes}


def seen_images(model: ConvModel, images: Tensor | Sequence[Tensor]) -> Tensor:
    """Raw images in [0, 1] → the (B, 3, H, W) float batch the model sees (its resize and
    crop), which is what every method takes."""
    return model.preprocess.geometry_batch(images).float()


def explain_image(
    model: ConvModel,
    seen: Tensor,
    targets: Sequence[Target],
    methods: Sequence[str],
    options: Mapping[str, Any],
    *,
    on_method: Callable[[str], None] | None = None,
) -> tuple[dict[str, Tensor], Tensor | None]:
    """Run each method on one image `seen` (1, 3, H, W): its (H, W) maps by method name, and
    the signed (3, H, W) guided gradient when "guided" is among them (the guided map is
    derived from it, so guided backprop runs once). `options` is one set for all methods;
    each takes the ones it knows. `on_method(name)` is called after each map."""
    maps: dict[str, Tensor] = {}
    signed: Tensor | None = None
    for m in methods:
        if m == "guided":
            signed = guided_gradients(model, seen, targets)[0]  # (3, H, W)
            maps[m] = signed.abs().amax(dim=0)
        else:
            fn = method_function(m)[1]
            maps[m] = fn(model, seen, targets, **method_options(m, options, strict=False))[0]
        if on_method is not None:
            on_method(m)
    return maps, signed


def class_probability(model: ConvModel, seen: Tensor, target: Target) -> float | None:
    """The softmax probability of a class target on one seen image (1, 3, H, W), or None when
    the target is not a class of a classifier."""
    if not isinstance(target, ClassTarget) or model.classes is None:
        return None
    with torch.inference_mode():
        logits = model(model.preprocess.normalize(seen.to(model.device)))
    if logits.dim() != 2 or logits.shape[1] <= target.index:
        return None
    return float(logits.float().softmax(dim=1)[0, target.index])
