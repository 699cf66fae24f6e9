"""Fast style transfer (Johnson et al. 2016; Dumoulin et al. 2017): the shipped four-style
network on bundled photos in one pass each, and its 2-D blend grid."""

from __future__ import annotations

import time

from torch import Tensor

from convscope.data.samples import load_sample
from convscope.gallery.context import DemoContext
from convscope.render.grids import image_grid, titled
from convscope.render.html import Figure, Section
from convscope.stylenet.apply import stylize
from convscope.stylenet.files import NetInfo, load_net
from convscope.stylenet.net import TransformerNet, blend_grid
from convscope.stylenet.zoo import card_path, net_path
from convscope.synthesize.octaves import resize
from convscope.synthesize.recipes.style import output_size

NET = "four-styles"
PHOTOS = ("chelsea", "astronaut", "coffee")
SIZE = 256  # each photo's long side
GRID_PHOTO, GRID_SIZE, STEPS = "chelsea", 160, 5
TILE = 256


def _photo(name: str, side: int) -> Tensor:
    x = load_sample(name)
    hw = output_size((int(x.shape[-2]), int(x.shape[-1])), side)
    return resize(x[None], hw)[0].clamp(0, 1)


def _styles(ctx: DemoContext, net: TransformerNet, info: NetInfo) -> Figure:
    photos = [_photo(p, SIZE) for p in PHOTOS]
    tiles: list[Tensor] = []
    labels: list[str] = []
    seconds = 0.0
    for name, photo in zip(PHOTOS, photos, strict=True):
        tiles.append(photo)
        labels.append(name)
        for k, style in enumerate(info.styles):
            t0 = time.perf_counter()
            tiles += stylize(net, [photo], style=k)
            seconds += time.perf_counter() - t0
            labels.append(style)
    grid = image_grid(tiles, labels=labels, ncol=1 + len(info.styles), tile=TILE, label_height=22)
    fig = ctx.save("stylenet_four_styles.png", titled(grid, "One network, four styles"))
    steps = info.training.get("steps", "?")
    per_image = 1000 * seconds / (len(photos) * len(info.styles))
    return Figure(
        fig.src,
        f"One feed-forward network (Johnson et al.'s, with conditional instance norm: one "
        f"scale and shift per style in every norm layer) trained for {steps} steps on Debian's "
        f"wallpaper photos against VGG16. Each image is one forward pass, {per_image:.0f} ms at "
        f"{SIZE} px on this machine, instead of minutes of optimization.",
        wide=True,
    )


def _square(name: str, side: int) -> Tensor:
    """(3, side, side): the photo's middle square."""
    x = load_sample(name)
    h, w = int(x.shape[-2]), int(x.shape[-1])
    k = min(h, w)
    y0, x0 = (h - k) // 2, (w - k) // 2
    return resize(x[None, :, y0 : y0 + k, x0 : x0 + k], (side, side))[0].clamp(0, 1)


def _blend_grid(ctx: DemoContext, net: TransformerNet, info: NetInfo) -> Figure:
    photo = _square(GRID_PHOTO, GRID_SIZE)
    weights = blend_grid([0, 1, 2, 3], len(info.styles), STEPS)  # (STEPS², 4)
    tiles = [stylize(net, [photo], style=w.tolist())[0] for w in weights]
    grid = image_grid(tiles, ncol=STEPS, tile=GRID_SIZE)
    names = info.styles
    fig = ctx.save("stylenet_blend_grid.png", titled(grid, "Four styles blended"))
    return Figure(
        fig.src,
        "Blending at test time: the network's per-style scales and shifts are mixed with "
        f"bilinear weights (normalized to sum 1), {names[0]} top left, {names[1]} top right, "
        f"{names[2]} bottom left, {names[3]} bottom right "
        f"(`convscope stylenet apply {NET} {GRID_PHOTO} --grid {','.join(names)}`).",
        wide=False,
    )


def section(ctx: DemoContext) -> Section:
    notes: list[str] = []
    figures: list[Figure] = []
    if net_path(NET).is_file():
        net, info = load_net(net_path(NET))
        figures = [_styles(ctx, net, info), _blend_grid(ctx, net, info)]
        notes.append(f"How it was trained: {card_path(NET).name} beside the network.")
    else:
        notes.append(f"the shipped network {NET} is not installed; skipped.")
    return Section(
        "Fast style transfer",
        "A feed-forward network trained once per set of styles, then one pass per image "
        "(`convscope stylenet train` / `apply`), with the same perceptual losses as "
        "`convscope style`.",
        figures,
        notes=tuple(notes),
    )
