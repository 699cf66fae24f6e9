"""Segmentation and faithfulness: GrabCut seeded by saliency, and deletion/insertion curves."""

from __future__ import annotations

from torch import Tensor

from convscope.attribute import METHODS, describe_target, make_targets, seen_images
from convscope.attribute.faithfulness import evaluate, report_table
from convscope.attribute.segment import cutout_rgba, grabcut_segment
from convscope.data.images import from_pil
from convscope.data.samples import load_sample
from convscope.gallery.context import DemoContext
from convscope.render.curves import curves_plot
from convscope.render.grids import image_grid, titled
from convscope.render.heatmaps import heatmap_overlay
from convscope.render.html import Figure, Section
from convscope.render.panels import on_checkerboard

SEGMENT_METHOD = "guided"
"""The method whose GrabCut cut-outs of the demo samples look best: the cup (and the spoon),
the cat's eyes and nose. Grad-CAM's cut-outs are coarser (7×7 maps); plain gradients' are
patchy."""


def section(ctx: DemoContext) -> Section:
    cm = ctx.model("efficientnet_lite0")
    samples = ("coffee", "cat")
    seen = seen_images(cm, [load_sample(n) for n in samples])
    targets = make_targets(cm, seen)
    maps = METHODS[SEGMENT_METHOD](cm, seen, targets)
    tiles: list[Tensor] = []
    labels: list[str] = []
    for name, img, m, t in zip(samples, seen, maps, targets, strict=True):
        mask = grabcut_segment(img, m)
        cut = on_checkerboard(cutout_rgba(img, mask))
        overlay = heatmap_overlay(img, m, percentile=99.0, weighted=True, alpha=0.8)
        tiles += [img, overlay, from_pil(cut)]
        labels += [f"{name}: {describe_target(cm, t)}", f"{SEGMENT_METHOD} map", "cut-out"]
    grid = image_grid(tiles, labels=labels, ncol=3, tile=224)
    cut_fig = ctx.save("segment_cutouts.png", titled(grid, f"GrabCut seeded by {SEGMENT_METHOD}"))
    report = evaluate(
        cm,
        seen[:1],
        ["gradcam", "gradient"],
        names=["coffee"],
        steps=10,
        random_maps=2,
        seed=0,
        on_progress=ctx.on_progress,
    )
    plot = curves_plot(report.curves_for("coffee"), title="EfficientNet-Lite0 · coffee")
    curves_fig = ctx.save("faithfulness_curves.png", plot)
    header, *rows = report_table(report)
    return Section(
        "Segmentation and faithfulness",
        "A saliency map says roughly where the evidence is; seeded with it, GrabCut follows "
        "the object's colour edges (`convscope segment`). Deletion and insertion curves "
        "(Petsiuk et al. 2018) test whether the map ranks pixels as the model does: removing "
        "the most salient pixels first should make the probability fall faster than for "
        "random maps (`convscope faithfulness`).",
        [
            Figure(
                cut_fig.src,
                "Guided-backprop maps seed GrabCut: the top 5 % of the (blurred) map is sure "
                "object, the bottom 30 % sure background, and GrabCut decides the rest from "
                "colour.",
            ),
            Figure(
                curves_fig.src,
                "Deleting (left: cells become ImageNet's mean colour) and inserting (right: "
                "into a blurred copy) 8 px cells of the coffee image in order of saliency; "
                "dashed: the mean of two smooth random maps.",
                wide=True,
            ),
        ],
        [header[1:], *[r[1:] for r in rows]],
    )
