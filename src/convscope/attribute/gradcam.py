"""Grad-CAM (Selvaraju et al. 2017): where a late conv layer's evidence for a target lies.

For a layer with activations A (C, h, w) and gradients G = d score / d A:

    weights_c = mean over (y, x) of G_c                      (C,)
    cam       = ReLU(sum_c weights_c * A_c)                  (h, w)
    map       = bilinear upsampling of cam to the image      (H, W)

The map is returned unnormalized (in the units of score × activation), so maps of one model
compare across images; renderers scale it to its maximum.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from convscope.attribute.gradients import check_attribution_inputs
from convscope.attribute.targets import NeuronTarget, Target, target_scores
from convscope.errors import UserInputError
from convscope.models.base import ConvModel
from convscope.probe import Probe

__all__ = ["NO_LAYER_MESSAGE", "cam_layer", "gradcam_low_res", "gradcam_map"]

NO_LAYER_MESSAGE = "--method gradcam needs --layer on a model with no default layer."


def cam_layer(model: ConvModel, layer: str | None) -> str:
    """The layer Grad-CAM uses: `layer` (alias or dotted name, checked) or the model's
    default layer."""
    name = layer if layer is not None else model.default_layer
    if name is None:
        raise UserInputError(NO_LAYER_MESSAGE)
    model.resolve(name)  # unknown names raise with the closest ones
    return name


def gradcam_low_res(
    model: ConvModel, images: Tensor, targets: Sequence[Target], *, layer: str | None = None
) -> Tensor:
    """Grad-CAM at the layer's own resolution: (B, h, w) float32 on the CPU."""
    name = cam_layer(model, layer)
    x = check_attribution_inputs(model, images, targets)
    with torch.inference_mode(False), torch.enable_grad():
        x = x.clone()
        with Probe(model, [name], grads=True, detach=False) as probe:
            scores = target_scores(model, model.preprocess.normalize(x), targets)  # (B,)
            act = probe.activations.get(name)
            if act is None:
                neurons = {t.layer for t in targets if isinstance(t, NeuronTarget)}
                if neurons:
                    raise UserInputError(
                        f"Grad-CAM's layer {name} comes after the neuron's layer "
                        f"{neurons.pop()}; Grad-CAM of a neuron needs a layer at or before it."
                    )
                raise UserInputError(f"layer {name} was not run in the model's forward pass.")
            if act.dim() != 4:
                raise UserInputError(
                    f"Grad-CAM needs a spatial layer, but {name} has output shape "
                    f"{tuple(act.shape)}."
                )
            if not scores.requires_grad:
                raise UserInputError(f"the target does not depend on layer {name}.")
            # autograd.grad (not backward): the probe's gradient hook fires on `act`, and no
            # parameter's .grad is written.
            (grad,) = torch.autograd.grad(scores.sum(), act, allow_unused=True)
            if grad is None:
                raise UserInputError(
                    f"the target does not depend on layer {name}; a neuron target must lie "
                    "after Grad-CAM's layer."
                )
            grad = probe.gradients.get(name, grad)  # (B, C, h, w)
        weights = grad.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        cam = (weights * act.detach()).sum(dim=1).clamp(min=0)  # (B, h, w)
    return cam.detach().float().cpu()


def gradcam_map(
    model: ConvModel, images: Tensor, targets: Sequence[Target], *, layer: str | None = None
) -> Tensor:
    """Grad-CAM of each image's target at `layer` (default: the model's default layer),
    bilinearly upsampled to the image: (B, H, W), non-negative."""
    cam = gradcam_low_res(model, images, targets, layer=layer)  # (B, h, w)
    h, w = int(images.shape[-2]), int(images.shape[-1])
    up = F.interpolate(cam.unsqueeze(1), size=(h, w), mode="bilinear", align_corners=False)
    return up[:, 0].clamp(min=0)  # interpolation of non-negative values stays non-negative
