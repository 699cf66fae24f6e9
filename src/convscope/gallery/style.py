"""Neural style transfer (Gatys et al. 2016) at small sizes: one content with two styles, the
style scale, a blend of the two, and the content's own colours kept or not."""

from __future__ import annotations

from torch import Tensor

from convscope.gallery.context import DemoContext, classic_or_sample
from convscope.render.grids import image_grid, titled
from convscope.render.html import Figure, Section
from convscope.synthesize.colors import original_colors
from convscope.synthesize.recipes.style import StyleResult, style_transfer

SIZE = 160  # the output's long side
STEPS = 60  # L-BFGS steps from the content
SCALES = (0.5, 1.0, 2.0)  # --style-scale
BLENDS = (0.0, 0.25, 0.5, 0.75, 1.0)  # the first style's weight
TILE = 320  # results show at twice their size


def _images() -> tuple[tuple[Tensor, str], tuple[Tensor, str], tuple[Tensor, str]]:
    content = classic_or_sample("content/tubingen.jpg", "astronaut")
    first = classic_or_sample("styles/starry_night.jpg", "immunohistochemistry")
    second = classic_or_sample("styles/the_scream.jpg", "hubble")
    return content, first, second


class _Runs:
    """Style transfers of one content, cached by (styles, blend, scale)."""

    def __init__(self, ctx: DemoContext, content: Tensor, styles: list[Tensor]) -> None:
        self.ctx, self.content, self.styles = ctx, content, styles
        self.done: dict[tuple[float, float], StyleResult] = {}

    def get(self, weight: float, scale: float = 1.0) -> StyleResult:
        """The first style at `weight`, the second at 1 − `weight`, at `scale`."""
        key = (weight, scale)
        if key not in self.done:
            vgg = self.ctx.model("vgg16")
            if weight in (0.0, 1.0):  # one style alone: the same as a blend of 1 and 0
                styles, blend = [self.styles[0 if weight == 1.0 else 1]], None
            else:
                styles, blend = self.styles, [weight, 1.0 - weight]
            self.done[key] = style_transfer(
                vgg,
                self.content,
                styles,
                blend=blend,
                style_scale=scale,
                size=SIZE,
                steps=STEPS,
                on_progress=self.ctx.on_progress,
            )
        return self.done[key]


def _two_styles(ctx: DemoContext, runs: _Runs, names: list[str]) -> Figure:
    a, b = runs.get(1.0), runs.get(0.0)
    tiles = [runs.content, runs.styles[0], a.image, runs.styles[1], b.image]
    labels = [names[0], names[1], "stylized", names[2], "stylized"]
    grid = image_grid(tiles, labels=labels, ncol=5, tile=TILE, label_height=22)
    fig = ctx.save("style_two_styles.png", titled(grid, "One content, two styles (VGG16)"))
    return Figure(
        fig.src,
        f"Gatys et al.'s style transfer ({SIZE} px, {STEPS} L-BFGS steps from the content, "
        "neural-style's weights: content 5 at relu4_2, style 100 at relu1_1…relu5_1, TV "
        "1e-3, each term normalized so the weights hold at any size). The layout stays the "
        "content's; the brush strokes, colours and textures are the painting's.",
        wide=True,
    )


def _scales(ctx: DemoContext, runs: _Runs, names: list[str]) -> Figure:
    results = [runs.get(1.0, s) for s in SCALES]
    labels = [f"--style-scale {s:g}" for s in SCALES]
    grid = image_grid([r.image for r in results], labels=labels, ncol=len(SCALES), tile=TILE)
    fig = ctx.save("style_scale.png", titled(grid, f"The style's scale ({names[1]})"))
    return Figure(
        fig.src,
        "The style image is resized to the scale times the output's size before its Gram "
        "matrices are taken, and the Grams describe patterns at their size in pixels: at "
        "0.5 the stars and strokes come out small and busy, at 2 as large, smooth swirls.",
        wide=True,
    )


def _blends(ctx: DemoContext, runs: _Runs, names: list[str]) -> Figure:
    results = [runs.get(w) for w in BLENDS]
    labels = [f"{w:g} : {1 - w:g}" for w in BLENDS]
    grid = image_grid([r.image for r in results], labels=labels, ncol=len(BLENDS), tile=TILE)
    fig = ctx.save(
        "style_blend.png", titled(grid, f"Blending {names[1]} : {names[2]} (--style-blend-weights)")
    )
    return Figure(
        fig.src,
        "Two styles at once: the target Gram matrices are the weighted sum of both styles' "
        "(the weights normalized to sum 1). The ends are the single-style runs.",
        wide=True,
    )


def _colors(ctx: DemoContext, runs: _Runs, names: list[str]) -> Figure:
    results = [runs.get(1.0), runs.get(0.0)]
    tiles: list[Tensor] = []
    labels: list[str] = []
    for r, name in zip(results, names[1:], strict=True):
        tiles += [r.image, original_colors(r.image, runs.content)]
        labels += [f"{name}", f"{name}, --original-colors"]
    grid = image_grid(tiles, labels=labels, ncol=4, tile=TILE, label_height=22)
    fig = ctx.save("style_original_colors.png", titled(grid, "Original colours off and on"))
    return Figure(
        fig.src,
        "Luminance-only transfer (Gatys et al. 2017): the result's luminance with the "
        "content's chroma in YCbCr, so the painting gives the strokes and the photo keeps "
        "its colours.",
        wide=True,
    )


def section(ctx: DemoContext) -> Section:
    skipped: list[str] = []
    figures: list[Figure] = []
    (content, c_name), (first, a_name), (second, b_name) = _images()
    if ctx.try_model("vgg16", skipped) is not None:
        runs = _Runs(ctx, content, [first, second])
        names = [c_name, a_name, b_name]
        figures = [
            _two_styles(ctx, runs, names),
            _scales(ctx, runs, names),
            _blends(ctx, runs, names),
            _colors(ctx, runs, names),
        ]
    return Section(
        "Style transfer",
        "The content of one image in the style of another: the content's features at one "
        "deep layer, the style's Gram matrices at several (`convscope style`). "
        f"Images: {c_name}, {a_name}, {b_name}.",
        figures,
        notes=tuple(skipped),
    )
