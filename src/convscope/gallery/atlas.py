"""A small atlas of efficientnet_lite0 (`convscope atlas`) in the demo's `atlas/` folder: a few
channels of two layers on recoloured crops of the bundled photos (labelled by photo, so the
channel pages have their per-class means), at small sizes; the page links to it."""

from __future__ import annotations

from convscope.atlas import build_atlas
from convscope.data.datasets import AugmentedCrops
from convscope.data.images import load_image
from convscope.gallery.context import DemoContext
from convscope.render.grids import image_grid, titled
from convscope.render.html import Figure, Section

TITLE = "Atlas"
MODEL = "efficientnet_lite0"
LAYERS = ("block4", "block10")
CHANNELS = (0, 1, 2, 3)
SIZE = 64  # the feature visualizations' side: small, so the section stays quick
STEPS = 64
CROPS_PER_PHOTO = 6


def section(ctx: DemoContext) -> Section:
    cm = ctx.model(MODEL)
    data = AugmentedCrops(CROPS_PER_PHOTO, size=160, seed=0, first_plain=True)
    result = build_atlas(
        cm,
        data,
        list(LAYERS),
        out=ctx.out / "atlas",
        channels=list(CHANNELS),
        steps=STEPS,
        size=SIZE,
        diverse=2,
        k=6,
        neighbors=6,
        on_progress=ctx.on_progress,
    )
    tiles, labels = [], []
    for layer in result.layers:
        for ch in layer.channels:
            tiles.append(load_image(result.index.parent / layer.folder / ch.image))
            labels.append(f"{layer.name} ch {ch.channel}")
    preview = titled(
        image_grid(tiles, ncol=len(CHANNELS), labels=labels, tile=128),
        f"{MODEL} · feature visualizations of the atlas",
    )
    saved = ctx.save("atlas_preview.png", preview)
    return Section(
        TITLE,
        f"`convscope atlas` writes a static site of a model that opens from the filesystem: "
        f"a page per channel with its feature visualization, diverse images, the dataset "
        f"patches that excite it most (with guided backprop) and its mean activation per "
        f"class, and a t-SNE map of the dataset where clicking an image shows its nearest "
        f"neighbours. This one covers channels {CHANNELS[0]}–{CHANNELS[-1]} of {MODEL}'s "
        f"{' and '.join(LAYERS)} on {len(data)} recoloured crops of {len(data.classes or [])} "
        f"bundled photos, at {SIZE} px and {STEPS} steps to stay quick.",
        [Figure(saved.src, "Click to open the atlas.", wide=True, href="atlas/index.html")],
        links=[("atlas/index.html", "Open the atlas"), ("atlas/map.html", "its map")],
    )
