"""Activation maps: what the original (Caffe) VGG16 computes on the cat, layer by layer."""

from __future__ import annotations

from convscope.data.samples import load_sample
from convscope.gallery.context import DemoContext
from convscope.probe import capture
from convscope.render.grids import image_grid, titled
from convscope.render.html import Figure, Section
from convscope.render.maps import channel_tiles

LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


def section(ctx: DemoContext) -> Section:
    vgg = ctx.model("vgg16")
    image = load_sample("cat")
    x = vgg.prepare(image)  # (1, 3, 224, 224)
    acts = capture(vgg, x, list(LAYERS))
    figures = []
    for name in LAYERS:
        act = acts[name][0]  # (C, H, W)
        # The 24 most active channels, so the grid is not mostly black.
        order = act.mean(dim=(1, 2)).argsort(descending=True)[:24].tolist()
        tiles = channel_tiles(act, channels=order, scaling="channel")
        grid = image_grid(list(tiles), ncol=8, tile=112, labels=[f"ch {c}" for c in order])
        c, h, w = act.shape
        fig = ctx.save(f"act_{name}.png", titled(grid, f"VGG16 {name} · {c} x {h} x {w}"))
        figures.append(
            Figure(
                fig.src,
                f"{name}: the 24 channels with the highest mean, each scaled to its "
                "own min..max (per-channel scaling).",
            )
        )
    crop = vgg.preprocess.geometry(image)
    fig = ctx.save("act_input.png", image_grid([crop], tile=224, labels=["input (224 x 224)"]))
    figures.insert(0, Figure(fig.src, "The input, as VGG16's preprocessing crops it."))
    return Section(
        "Activation maps",
        "What the original (Caffe) VGG16 computes on the cat, layer by layer: early layers "
        "respond to edges and colours at full resolution, late layers to parts at 14×14.",
        figures,
    )
