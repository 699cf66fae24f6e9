"""Filters: first-layer filters of two networks side by side, higher-layer slices, depthwise."""

from __future__ import annotations

from convscope.gallery.context import DemoContext
from convscope.inspect.filters import compare_first_layers, filter_grid
from convscope.render.html import Figure, Section


def section(ctx: DemoContext) -> Section:
    skipped: list[str] = []
    eff = ctx.try_model("efficientnet_lite0", skipped)
    vgg = ctx.try_model("vgg16", skipped)
    figures: list[Figure] = []
    firsts = [m for m in (eff, vgg) if m is not None]
    if firsts:
        fig = ctx.save("filters_first_layers.png", compare_first_layers(firsts))
        figures.append(
            Figure(
                fig.src,
                "First-layer filters, each an RGB tile scaled to its own min..max: oriented "
                "edges, colour opponents and blobs appear in both networks.",
                wide=True,
            )
        )
    if vgg is not None:
        fig = ctx.save(
            "filters_vgg16_conv2_1.png", filter_grid(vgg, "conv2_1", max_filters=8, max_inputs=16)
        )
        figures.append(
            Figure(
                fig.src,
                "VGG16 conv2_1: one row per filter, one 3x3 slice per input channel (16 of "
                "64). A row shares its filter's scaling, so inputs a filter barely uses look "
                "flat gray.",
                wide=True,
            )
        )
    if eff is not None:
        fig = ctx.save(
            "filters_efficientnet_depthwise.png",
            filter_grid(eff, "_blocks.3._depthwise_conv", max_filters=64),
        )
        figures.append(
            Figure(
                fig.src,
                "EfficientNet-Lite0 block 3: depthwise 5x5 filters, each working on a single "
                "channel, so each is one grayscale tile.",
            )
        )
    return Section(
        "Filters",
        "What the convolution weights look like. First layers are RGB and readable; deeper "
        "layers mix many channels, so each filter becomes a row of per-input slices.",
        figures,
        notes=tuple(skipped),
    )
