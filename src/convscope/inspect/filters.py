"""Convolution filters as pictures: first-layer RGB filters, per-input slices, depthwise kernels.

Weights are drawn as they are, with no model special-cased by name. A first convolution whose
network was trained on BGR input would show red and blue swapped; convscope's `vgg16` already
flips `conv1_1` to take RGB, so its filters show their true colours.

Normalization: every filter is scaled on its own, its min..max over *all* its values (every
input channel and tap) mapped to 0..1; a constant filter is drawn mid-gray (0.5). So:

* first-layer filters (3 input channels) are RGB tiles whose colours and contrast show the
  filter's own structure, not its strength relative to other filters;
* higher-layer filters (I ≠ 3 inputs) are a row of grayscale slices, one per input channel,
  that share their filter's scaling, so slices in a row compare directly (an input the filter
  barely uses looks flat) while rows do not compare with each other. `max_inputs` only chooses
  which slices are shown; the scaling is always over the whole filter;
* depthwise filters (weight (O, 1, k, k)) are one grayscale tile each.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw
from torch import Tensor, nn

from convscope.errors import UserInputError
from convscope.models.base import ConvModel
from convscope.probe import resolve_layer
from convscope.render.grids import image_grid, text_font, titled
from convscope.render.panels import side_by_side

__all__ = [
    "MAX_TILES",
    "compare_first_layers",
    "conv_layer",
    "filter_grid",
    "filter_tiles",
    "first_conv",
]

MAX_TILES = 16_384
"""`filter_grid` refuses to draw more filter tiles than this in one image."""

DEFAULT_MAX_FILTERS = 256
"""Filters shown when `max_filters` is None for layers drawn one tile per filter."""

DEFAULT_SLICED_FILTERS = 16
"""Filters (rows) shown when `max_filters` is None for layers drawn as per-input slices."""

DEFAULT_SLICED_INPUTS = 16
"""Input slices (columns) shown when `max_inputs` is None."""

_TARGET_TILE = 56  # pixels; the actual tile is a whole multiple of the kernel size
_BG = (222, 226, 232)  # light blue-gray: white and mid-gray tiles both stand out
_INK = (0, 0, 0)


def _split(model: ConvModel | nn.Module) -> tuple[nn.Module, str]:
    if isinstance(model, ConvModel):
        return model.module, model.name
    if isinstance(model, nn.Module):
        return model, type(model).__name__
    raise UserInputError(f"expected a ConvModel or nn.Module, got {type(model).__name__}.")


def first_conv(model: ConvModel | nn.Module) -> str:
    """The dotted name of the first `nn.Conv2d` in the model (in registration order)."""
    module, name = _split(model)
    for dotted, m in module.named_modules():
        if dotted and isinstance(m, nn.Conv2d):
            return str(dotted)
    raise UserInputError(f"model {name} has no Conv2d layer, so it has no filters to show.")


def conv_layer(model: ConvModel | nn.Module, layer: str | None = None) -> tuple[str, nn.Conv2d]:
    """(dotted name, module) of `layer` (alias or dotted name; None: the first conv).

    A layer that is not an `nn.Conv2d` raises a one-sentence error naming its type."""
    module, _ = _split(model)
    dotted = first_conv(model) if layer is None else resolve_layer(model, layer)
    conv = dict(module.named_modules())[dotted]
    if not isinstance(conv, nn.Conv2d):
        raise UserInputError(
            f"layer {layer or dotted} is a {type(conv).__name__}, not a Conv2d; "
            "only convolution layers have filters to show."
        )
    return dotted, conv


def _check_limit(value: int | None, what: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise UserInputError(f"{what} must be a whole number, got {value!r}.")
    if value is not None and value < 1:
        raise UserInputError(f"{what} must be at least 1, got {value}.")


def filter_tiles(
    weight: Tensor,
    *,
    max_filters: int | None = None,
    max_inputs: int | None = None,
    rgb: bool | None = None,
) -> Tensor:
    """Conv weights (O, I, kh, kw) → filter tiles (F, S, C, kh, kw) with values in [0, 1].

    F filters (the first `max_filters`), S tiles per filter and C channels per tile:

    * RGB (`rgb=None` means I == 3): S = 1, C = 3, one colour tile per filter;
    * otherwise: S = I (or the first `max_inputs`), C = 1, one grayscale slice per input
      channel; depthwise weights (I == 1) give one grayscale tile per filter.

    Each filter is scaled by its own min..max over all its values (→ 0..1); a constant filter
    becomes 0.5. The input is never modified.
    """
    if not isinstance(weight, Tensor):
        raise UserInputError(f"weights must be a torch.Tensor, not {type(weight).__name__}.")
    if weight.dim() != 4 or 0 in weight.shape:
        raise UserInputError(
            f"conv weights must have shape (out, in, kh, kw), got {tuple(weight.shape)}."
        )
    _check_limit(max_filters, "max_filters")
    _check_limit(max_inputs, "max_inputs")
    o, i = int(weight.shape[0]), int(weight.shape[1])
    if rgb is None:
        rgb = i == 3
    elif rgb and i != 3:
        raise UserInputError(f"RGB filter tiles need 3 input channels, these weights have {i}.")
    w = weight.detach()[: o if max_filters is None else max_filters].float().cpu()
    lo = w.amin(dim=(1, 2, 3), keepdim=True)
    hi = w.amax(dim=(1, 2, 3), keepdim=True)
    span = hi - lo
    scaled = torch.where(span > 0, (w - lo) / span.clamp_min(1e-30), torch.full_like(w, 0.5))
    scaled = scaled.clamp(0.0, 1.0)
    if rgb:
        return scaled.unsqueeze(1)  # (F, 1, 3, kh, kw)
    if max_inputs is not None:
        scaled = scaled[:, :max_inputs]
    return scaled.unsqueeze(2)  # (F, S, 1, kh, kw)


def _tile_for(kh: int, kw: int) -> int:
    """A tile side that is a whole multiple of the kernel's larger side (crisp enlargement)."""
    k = max(kh, kw)
    return k * max(1, round(_TARGET_TILE / k)) if k <= _TARGET_TILE else k


def _sliced_grid(tiles: Tensor, tile: int) -> Image.Image:
    """(F, S, 1, kh, kw) slices → a grid with filter indices on the left, inputs on top."""
    f, s = int(tiles.shape[0]), int(tiles.shape[1])
    pad = 3
    body = image_grid(tiles.flatten(0, 1), ncol=s, tile=tile, pad=pad, background=_BG)
    font_px = min(14, max(10, tile // 4))
    face = text_font(font_px)
    left = int(face.getlength(f"f{f - 1}")) + 10
    top = font_px + 8
    out = Image.new("RGB", (body.width + left, body.height + top), _BG)
    out.paste(body, (left, top))
    draw = ImageDraw.Draw(out)
    step = tile + pad
    for c in range(s):
        x = left + pad + c * step + tile / 2
        draw.text((x, top / 2 + 1), f"in {c}", fill=_INK, font=face, anchor="mm")
    for r in range(f):
        y = top + pad + r * step + tile / 2
        draw.text((left - 5, y), f"f{r}", fill=_INK, font=face, anchor="rm")
    return out


def _shape(conv: nn.Conv2d) -> str:
    return "x".join(str(int(d)) for d in conv.weight.shape)


def _layer_label(model: ConvModel | nn.Module, dotted: str) -> str:
    alias = model.alias_of(dotted) if isinstance(model, ConvModel) else None
    return f"{alias} ({dotted})" if alias else dotted


def _filter_panel(
    model: ConvModel | nn.Module,
    layer: str | None,
    *,
    max_filters: int | None,
    max_inputs: int | None,
    tile: int | None,
    ncol: int | None,
) -> tuple[Image.Image, str, str]:
    """(untitled grid, title, subtitle) for one conv layer."""
    _check_limit(max_filters, "max_filters")
    _check_limit(max_inputs, "max_inputs")
    _check_limit(tile, "tile")
    _check_limit(ncol, "ncol")
    _, model_name = _split(model)
    dotted, conv = conv_layer(model, layer)
    weight = conv.weight
    o, i, kh, kw = (int(d) for d in weight.shape)
    rgb = i == 3 and dotted == first_conv(model)
    sliced = not rgb and i > 1
    if max_filters is None:
        max_filters = DEFAULT_SLICED_FILTERS if sliced else DEFAULT_MAX_FILTERS
    if sliced and max_inputs is None:
        max_inputs = DEFAULT_SLICED_INPUTS
    nf = min(o, max_filters)
    ns = min(i, max_inputs) if sliced and max_inputs is not None else (i if sliced else 1)
    if nf * ns > MAX_TILES:
        raise UserInputError(
            f"{nf} filters × {ns} inputs would be {nf * ns:,} tiles, more than the "
            f"{MAX_TILES:,} that fit in one image; lower --max-filters or --max-inputs."
        )
    tiles = filter_tiles(weight, max_filters=nf, max_inputs=ns, rgb=rgb)
    side = _tile_for(kh, kw) if tile is None else tile
    shown = f"filters 0-{nf - 1} of {o}" if nf < o else f"all {o} filters"
    title = f"{model_name} · {_layer_label(model, dotted)} · {_shape(conv)}"
    if sliced:
        grid = _sliced_grid(tiles, side)
        inputs = f"inputs 0-{ns - 1} of {i}" if ns < i else f"all {i} inputs"
        group = f" of the filter's group (groups={conv.groups})" if conv.groups > 1 else ""
        sub = f"rows: {shown}; columns: {inputs}{group}; each row scaled to its filter's min..max"
    else:
        grid = image_grid(
            tiles[:, 0],
            ncol=ncol or math.ceil(math.sqrt(nf)),
            tile=side,
            labels=[str(k) for k in range(nf)],
            pad=4,
            background=_BG,
        )
        if rgb:
            kind = "RGB"
        elif conv.groups == conv.in_channels and conv.groups > 1:
            kind = "depthwise"
        else:
            kind = "1 input"
        sub = f"{kind}, {shown}, each scaled to its own min..max"
    return grid, title, sub


def _with_titles(
    grid: Image.Image,
    title: str,
    sub: str,
    *,
    background: tuple[int, int, int] = _BG,
) -> Image.Image:
    """`grid` under a title (18 px) and a subtitle (12 px), widened so that both fit."""
    need = max(text_font(18).getlength(title), text_font(12).getlength(sub)) + 12
    width = max(grid.width, math.ceil(need))
    if grid.width < width:
        wide = Image.new("RGB", (width, grid.height), background)
        wide.paste(grid, ((width - grid.width) // 2, 0))
        grid = wide
    sub_bar = titled(grid, sub, height=22, background=background)
    return titled(sub_bar, title, height=28, background=background)


def filter_grid(
    model: ConvModel | nn.Module,
    layer: str | None = None,
    *,
    max_filters: int | None = None,
    max_inputs: int | None = None,
    tile: int | None = None,
    ncol: int | None = None,
) -> Image.Image:
    """A picture of one conv layer's filters, enlarged crisply and labelled by filter index.

    `layer` is an alias or dotted name (None: the first conv). The first conv on 3 inputs is
    drawn as RGB tiles; depthwise and single-input convs as one grayscale tile per filter;
    other convs as rows of grayscale slices (rows: filters, columns: input channels). With
    None, `max_filters` shows up to 256 tiles per filter layer, or 16 rows × 16 (`max_inputs`)
    slices. `tile` (pixels) defaults to a whole multiple of the kernel size near 56, so that
    every weight is an equal square. A title names the model, layer, weight shape and scaling.
    """
    grid, title, sub = _filter_panel(
        model, layer, max_filters=max_filters, max_inputs=max_inputs, tile=tile, ncol=ncol
    )
    return _with_titles(grid, title, sub)


def compare_first_layers(
    models: Sequence[ConvModel | nn.Module],
    *,
    max_filters: int | None = None,
    tile: int | None = None,
    gap: int = 24,
) -> Image.Image:
    """The first-layer filters of several models side by side, each panel titled with the
    model's name and weight shape (the classic opening figure: Gabor-like edges and colour
    blobs appear in every network trained on natural images)."""
    if isinstance(models, (ConvModel, nn.Module)) or not list(models):
        raise UserInputError("compare_first_layers needs a non-empty sequence of models.")
    if gap < 0:
        raise UserInputError(f"gap must be 0 or more pixels, got {gap}.")
    panels = []
    for m in models:
        grid, title, sub = _filter_panel(
            m, None, max_filters=max_filters, max_inputs=None, tile=tile, ncol=None
        )
        panels.append(_with_titles(grid, title, sub))
    return side_by_side(panels, gap=gap, background=(255, 255, 255))
