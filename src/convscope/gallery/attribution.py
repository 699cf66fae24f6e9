"""Saliency: occlusion, gradient, guided backprop and Grad-CAM on coffee and cat, and the guided
backprop of one intermediate neuron."""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from torch import Tensor

from convscope.attribute import (
    NeuronTarget,
    class_probability,
    describe_target,
    explain_image,
    guided_gradients,
    make_targets,
    seen_images,
)
from convscope.data.samples import load_sample
from convscope.gallery.context import DemoContext
from convscope.models import ConvModel
from convscope.probe import capture, receptive_fields
from convscope.render.grids import image_grid, titled
from convscope.render.heatmaps import saliency_panel, signed_gradient_image
from convscope.render.html import Figure, Section

METHODS = ("occlusion", "gradient", "guided", "gradcam")
NEURON_LAYER = "block5"


def _neuron_figure(cm: ConvModel, seen: Tensor, layer: str) -> tuple[Image.Image, str]:
    """Guided backprop of `layer`'s most active neuron on `seen` (1, 3, H, W): the input with
    the neuron's receptive field marked, its signed guided gradient, and both cropped to the
    field (the crop's gradient scaled on its own)."""
    act = capture(cm, cm.preprocess.normalize(seen.to(cm.device)), [layer])[layer][0]
    c = int(act.amax(dim=(1, 2)).argmax())
    _, h, w = act.shape
    y, x = divmod(int(act[c].flatten().argmax()), int(w))
    g = guided_gradients(cm, seen, [NeuronTarget(layer, c, (y, x))])[0]  # (3, H, W)
    H, W = int(seen.shape[-2]), int(seen.shape[-1])
    tiles = [seen[0].clone(), signed_gradient_image(g)]
    labels = ["input", "guided backprop"]
    rf = receptive_fields(cm, layer, W)[layer]
    if rf is not None:
        top, left, bottom, right = rf.box(y, x)
        t, lft, b, r = max(top, 0), max(left, 0), min(bottom, H), min(right, W)
        yellow = torch.tensor([1.0, 0.85, 0.0])[:, None]
        for edge in (t, b - 1):
            tiles[0][:, edge, lft:r] = yellow
        for edge in (lft, r - 1):
            tiles[0][:, t:b, edge] = yellow
        tiles += [seen[0][:, t:b, lft:r], signed_gradient_image(g[:, t:b, lft:r])]
        labels = ["input, neuron's field", "guided backprop", "field", "field: guided"]
    grid = image_grid(tiles, labels=labels, ncol=len(tiles), tile=224)
    caption = f"{layer} ch {c} @ {y},{x} of {h}x{w}"
    field = f", field {rf.size[0]} px" if rf is not None else ""
    title = f"{cm.name} · guided backprop of {caption}{field}"
    return titled(grid, title, height=30), caption


def section(ctx: DemoContext) -> Section:
    cm = ctx.model("efficientnet_lite0")
    figures: list[Figure] = []
    options: dict[str, Any] = {
        "window": 32,
        "stride": 16,
        "fill": "gray",
        "batch_size": 16,
        "on_progress": ctx.on_progress,
    }
    for sample in ("coffee", "cat"):
        seen = seen_images(cm, load_sample(sample))  # (1, 3, 224, 224)
        targets = make_targets(cm, seen)
        maps, signed = explain_image(cm, seen, targets, METHODS, options)
        described = describe_target(cm, targets[0])
        p = class_probability(cm, seen, targets[0])
        title = f"{cm.name} · {sample} · {described}" + ("" if p is None else f" · p={p:.0%}")
        fig = ctx.save(
            f"saliency_{sample}.png", saliency_panel(seen[0], maps, title=title, signed=signed)
        )
        figures.append(
            Figure(
                fig.src,
                f"Why {sample} is '{described}': occlusion (the drop in probability while a "
                "32 px gray square, slid in 16 px steps, hides each region), the gradient, "
                "guided backprop and Grad-CAM at the last conv layer, each scaled to its own "
                "99th percentile (jet: red = most important). Bottom left: the signed guided "
                "gradient.",
                wide=True,
            )
        )
    cat = seen_images(cm, load_sample("cat"))
    picture, caption = _neuron_figure(cm, cat, NEURON_LAYER)
    fig = ctx.save("saliency_neuron.png", picture)
    figures.append(
        Figure(
            fig.src,
            f"Guided backprop of one intermediate neuron ({caption}, the most active one on "
            "the cat): only pixels inside its receptive field (yellow box) can matter, and "
            "guided backprop shows which of them it responds to, signed (gray = zero).",
            wide=True,
        )
    )
    return Section(
        "Saliency",
        "Which pixels a prediction depends on. Occlusion measures it directly by hiding parts "
        "of the image; the gradient methods read it off one backward pass; Grad-CAM weights a "
        "late layer's maps by their gradients. `convscope saliency` draws these panels.",
        figures,
    )
