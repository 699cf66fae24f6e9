"""Texture synthesis: the lecture's layer-set progression (Gatys et al. 2015), and the
non-parametric baseline (Efros & Leung 1999, with Wei & Levoy's tree search) beside it."""

from __future__ import annotations

from torch import Tensor

from convscope.data.samples import load_sample
from convscope.gallery.context import DemoContext, classic_or_sample
from convscope.render.grids import image_grid, titled
from convscope.render.html import Figure, Section
from convscope.synthesize.efros_leung import efros_leung
from convscope.synthesize.octaves import resize
from convscope.synthesize.perceptual import STYLE_LAYERS
from convscope.synthesize.recipes.texture import texture, texture_panel, texture_progression

EXEMPLAR = 96  # the progression's exemplar: the middle 288 px of brick, at a third
SIZE = 112  # the progression's textures
STEPS = 100  # L-BFGS steps per texture
PAIR = (64, 128, 2)  # the side by side: a 64-px exemplar (the middle 128 px, halved) → 128 px
EL_WINDOW, EL_LEVELS = 9, 2  # measured on brick: larger windows lose the horizontal joints


def _exemplar(image: Tensor, side: int, shrink: int) -> Tensor:
    """(1, 3, side, side): the middle `side`·`shrink` px of `image`, shrunk `shrink` times."""
    x = image[None]
    h, w = int(x.shape[-2]), int(x.shape[-1])
    crop = min(h, w, side * shrink)
    y0, x0 = (h - crop) // 2, (w - crop) // 2
    x = x[..., y0 : y0 + crop, x0 : x0 + crop]
    return resize(x, (side, side)).clamp(0.0, 1.0)


def _painting() -> tuple[Tensor, str]:
    return classic_or_sample("styles/starry_night_crop.png", "immunohistochemistry")


def _progression(ctx: DemoContext) -> Figure:
    vgg = ctx.model("vgg16")
    brick = _exemplar(load_sample("brick"), EXEMPLAR, 3)
    results = texture_progression(vgg, brick, size=SIZE, steps=STEPS, on_progress=ctx.on_progress)
    fig = ctx.save("texture_progression.png", texture_panel(results))
    return Figure(
        fig.src,
        f"Texture synthesis by Gram matrices (Gatys et al. 2015; VGG16 with average pooling, "
        f"{SIZE} px from noise, {STEPS} L-BFGS steps each). Matching relu1_1 alone gives "
        "pixel-scale noise with the exemplar's local statistics (and a few blobs of colour "
        "the grey exemplar never had: one layer's Grams do not pin colour down); from relu2_1 "
        "on, edges join into mortar lines, and each deeper layer makes the bricks longer, "
        "straighter and more regular.",
        wide=True,
    )


def _side_by_side(ctx: DemoContext) -> Figure:
    vgg = ctx.model("vgg16")
    painting, painting_name = _painting()
    sources = [("brick", load_sample("brick")), ("grass", load_sample("grass"))]
    sources.append((painting_name, painting))
    side, size, shrink = PAIR
    tiles: list[Tensor] = []
    labels: list[str] = []
    seconds: list[float] = []
    for name, image in sources:
        small = _exemplar(image, side, shrink)
        el = efros_leung(
            small, size, window=EL_WINDOW, levels=EL_LEVELS, seed=0, on_progress=ctx.on_progress
        )
        neural = texture(
            vgg, small, layers=STYLE_LAYERS, size=size, steps=STEPS, on_progress=ctx.on_progress
        )
        seconds.append(el.seconds)
        tiles += [small[0], el.image, neural.image]
        labels += [f"{name} ({side} px)", "Efros-Leung", "Gatys (VGG16 Grams)"]
    grid = image_grid(tiles, labels=labels, ncol=3, tile=2 * size, label_height=22)
    fig = ctx.save(
        "texture_efros_leung.png",
        titled(grid, "Efros & Leung 1999 beside Gram matching"),
    )
    timing = ", ".join(f"{s:.1f} s" for s in seconds)
    return Figure(
        fig.src,
        f"Efros & Leung grow the texture pixel by pixel, copying the exemplar's pixel whose "
        f"neighbourhood matches best (a {EL_WINDOW}×{EL_WINDOW} window, {EL_LEVELS} levels "
        f"coarse to fine, a ball-tree search as in Wei & Levoy 2000; {size}² from {side}² px "
        f"in {timing}). "
        "On brick and grass it copies what it has seen, sharp and exact, patch by patch. On "
        f"{painting_name}, which is not a stationary texture, it can fall into one region "
        "and stay there (the 'garbage growing' the paper warns of). Gram matching keeps only "
        "the statistics of features: it invents new arrangements of all of the exemplar's "
        "parts, at the cost of sharp edges and some colour noise.",
        wide=True,
    )


def section(ctx: DemoContext) -> Section:
    skipped: list[str] = []
    figures: list[Figure] = []
    if ctx.try_model("vgg16", skipped) is not None:
        figures = [_progression(ctx), _side_by_side(ctx)]
    return Section(
        "Texture synthesis",
        "A texture is the statistics of a network's features: from noise, an image whose "
        "Gram matrices (the correlations between channels, averaged over positions) match "
        "the exemplar's (`convscope texture`, `--method efros-leung` for the baseline).",
        figures,
        notes=tuple(skipped),
    )
