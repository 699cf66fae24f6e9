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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from convscope.attribute.gradcam import cam_layer, gradcam_map
from convscope.attribute.gradients import (
    gradient_map,
    guided_gradients,
    guided_map,
    input_gradients,
    smoothgrad_map,
)
from convscope.attribute.methods import (
    METHOD_NAMES,
    METHODS,
    AttributionFn,
    class_probability,
    explain_image,
    method_function,
    method_options,
    seen_images,
)
from convscope.attribute.occlusion import occlusion_map
from convscope.attribute.targets import (
    ClassTarget,
    NeuronTarget,
    Target,
    class_target,
    describe_target,
    make_targets,
)
from convscope.errors import UserInputError
from convscope.models.base import ConvModel

__all__ = [
    "METHODS",
    "METHOD_NAMES",
    "AttributionFn",
    "ClassTarget",
    "NeuronTarget",
    "SaliencyResult",
    "Target",
    "class_probability",
    "class_target",
    "describe_target",
    "explain_image",
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


@dataclass(frozen=True)
class SaliencyResult:
    """What `saliency()` returns."""

    maps: Tensor  # (B, H, W) float32, non-negative
    targets: list[Target]  # one per image
    images: Tensor  # (B, 3, H, W) in [0, 1]: the images as the model saw them
    method: str


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
    _, fn = method_function(method)
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
