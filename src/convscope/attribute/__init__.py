"""Attribution: which pixels of an image a class score (or one neuron) depends on.

Every method follows one contract, so they are interchangeable and comparable:

    fn(model, images, targets, **options) -> maps

- `images`: (B, 3, H, W) floats in [0, 1], the images *as the model sees them* (after
  `model.preprocess.geometry`); methods apply `model.preprocess.normalize` themselves.
- `targets`: one `ClassTarget` or `NeuronTarget` per image.
- `maps`: (B, H, W) float32 on the CPU, non-negative importance, aligned with `images`.

Methods never change their inputs or the model, and leave no hooks behind, also when they
raise (bad input raises a one-sentence `UserInputError`).

`saliency()` is the convenient entry point: raw images, a class name or index (or a neuron),
and a method name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from convscope.attribute.gradcam import gradcam_map
from convscope.attribute.gradients import (
    gradient_map,
    guided_gradients,
    guided_map,
    input_gradients,
    smoothgrad_map,
)
from convscope.attribute.occlusion import occlusion_map
from convscope.attribute.targets import (
    ClassTarget,
    NeuronTarget,
    Target,
    class_target,
    describe_target,
)
from convscope.errors import UnknownNameError, UserInputError
from convscope.models.base import ConvModel, check_image_batch
from convscope.probe import capture

__all__ = [
    "METHODS",
    "AttributionFn",
    "ClassTarget",
    "NeuronTarget",
    "SaliencyResult",
    "Target",
    "class_target",
    "describe_target",
    "gradcam_map",
    "gradient_map",
    "guided_gradients",
    "guided_map",
    "input_gradients",
    "make_targets",
    "method_options",
    "occlusion_map",
    "saliency",
    "seen_images",
    "smoothgrad_map",
]

AttributionFn = Callable[..., Tensor]
"""`fn(model, images (B, 3, H, W), targets, **options) -> (B, H, W)`; see the module doc."""

METHODS: dict[str, AttributionFn] = {
    "gradient": gradient_map,
    "guided": guided_map,
    "smoothgrad": smoothgrad_map,
    "gradcam": gradcam_map,
    "occlusion": occlusion_map,
}


@dataclass(frozen=True)
class SaliencyResult:
    """What `saliency()` returns."""

    maps: Tensor  # (B, H, W) float32, non-negative
    targets: list[Target]  # one per image
    images: Tensor  # (B, 3, H, W) in [0, 1]: the images as the model saw them
    method: str


def _method(name: str) -> AttributionFn:
    if name not in METHODS:
        raise UnknownNameError("method", name, METHODS)
    return METHODS[name]


def method_options(
    method: str, options: Mapping[str, Any], *, strict: bool = True
) -> dict[str, Any]:
    """The subset of `options` that `method` takes. With `strict`, an option it does not take
    raises a one-sentence error; otherwise such options are dropped (the CLI passes one set of
    options to several methods)."""
    fn = _method(method)
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
    """Raw images in [0, 1] → the (B, 3, H, W) batch the model sees (its resize and crop)."""
    if isinstance(images, Tensor):
        return model.preprocess.geometry(check_image_batch(images)).float()
    items = [model.preprocess.geometry(check_image_batch(im)) for im in images]
    if not items:
        raise UserInputError("no images were given.")
    shapes = {tuple(t.shape[-2:]) for t in items}
    if len(shapes) > 1:
        raise UserInputError(
            f"images of different sizes {sorted(shapes)} cannot be batched; explain them "
            "one at a time."
        )
    return torch.cat(items).float()


def _model_input(model: ConvModel, seen: Tensor) -> Tensor:
    """Seen images → model input (normalize only: the geometry was applied already)."""
    return model.preprocess.normalize(seen.to(model.device))


def make_targets(
    model: ConvModel,
    seen: Tensor,
    target: str | int | None = None,
    *,
    layer: str | None = None,
    channel: int | None = None,
    position: tuple[int, int] | None = None,
) -> list[Target]:
    """One target per image of `seen` (B, 3, H, W), checked against the model.

    With `channel`, the neuron `layer`/`channel` at `position` (y, x in the layer's output;
    None = where that channel is highest); otherwise the class `target` (a name, matched
    fuzzily, or an index; None = each image's top prediction)."""
    seen = check_image_batch(seen)
    b = int(seen.shape[0])
    if channel is None:
        if position is not None:
            raise UserInputError("--position needs --channel (and --layer) to pick a neuron.")
        return list(class_target(model, target, _model_input(model, seen)))
    if target is not None:
        raise UserInputError(
            "give either a class target or a neuron (--layer and --channel), not both."
        )
    if layer is None:
        raise UserInputError("--channel needs --layer to name the neuron's layer.")
    model.resolve(layer)
    act = capture(model, _model_input(model, seen[:1]), [layer])[layer]
    if act.dim() != 4:
        raise UserInputError(
            f"layer {layer} has output shape {tuple(act.shape)}; a neuron target needs a "
            "spatial layer."
        )
    _, c, h, w = (int(d) for d in act.shape)
    if not 0 <= channel < c:
        raise UserInputError(f"channel {channel} is out of range 0..{c - 1} for layer {layer}.")
    if position is not None:
        y, x = position
        if not (0 <= y < h and 0 <= x < w):
            raise UserInputError(
                f"position {y},{x} is outside layer {layer}'s {h}x{w} output "
                f"(y in 0..{h - 1}, x in 0..{w - 1})."
            )
    return [NeuronTarget(layer, channel, position)] * b


def saliency(
    model: ConvModel,
    images: Tensor | Sequence[Tensor],
    target: str | int | None = None,
    *,
    method: str = "gradient",
    layer: str | None = None,
    channel: int | None = None,
    position: tuple[int, int] | None = None,
    **options: Any,
) -> SaliencyResult:
    """Explain `target` (a class name or index; None = the top prediction) in raw `images`
    ((3, H, W), (B, 3, H, W) or a list, in [0, 1]) with `method` (a key of `METHODS`).

    `layer` with `channel` (and optionally `position`) explains that neuron instead of a
    class (the guided backprop of an intermediate neuron, with method="guided"). `layer`
    without `channel` is Grad-CAM's layer. Other `options` go to the method, e.g.
    `window=`/`stride=` for occlusion or `samples=`/`noise=` for smoothgrad.

        result = saliency(model, load_sample("coffee"), "espresso", method="gradcam")
        result.maps  # (1, 224, 224)
    """
    fn = _method(method)
    opts = dict(options)
    if layer is not None and channel is None:
        if method != "gradcam":
            raise UserInputError(
                f"--layer without --channel picks Grad-CAM's layer; add --channel to explain "
                f"a neuron of {layer} with {method}."
            )
        opts["layer"] = layer
    opts = method_options(method, opts)
    seen = seen_images(model, images)
    if method == "gradcam":
        from convscope.attribute.gradcam import cam_layer

        cam_layer(model, opts.get("layer"))  # before any forward: the no-layer error first
    targets = make_targets(
        model,
        seen,
        target,
        layer=layer if channel is not None else None,
        channel=channel,
        position=position,
    )
    maps = fn(model, seen, targets, **opts)
    return SaliencyResult(maps=maps, targets=targets, images=seen, method=method)
