"""Image grids with optional labels, and title bars."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from convscope.data.images import to_pil
from convscope.errors import UserInputError

__all__ = ["default_tile", "grid_size", "image_grid", "ink_for", "text_font", "titled"]

Color = tuple[int, int, int]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

_MIN_TILE = 64
_MAX_TILE = 512


def text_font(size: int) -> Font:
    """Pillow's built-in font at `size` px (a fixed-size bitmap font on Pillow without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # pragma: no cover - old Pillow / no FreeType
        return ImageFont.load_default()


def _check_color(color: Sequence[int], what: str) -> Color:
    """A validated RGB triple of ints in 0..255."""
    vals = tuple(color)
    if len(vals) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in vals):
        raise UserInputError(f"{what} must be three integers in 0..255, got {color!r}.")
    return (vals[0], vals[1], vals[2])


def ink_for(background: Color) -> Color:
    """Black text on light backgrounds, white on dark ones."""
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b >= 128 else (255, 255, 255)


def _fit_text(text: str, font: Font, width: int) -> str:
    """`text` on one line, cut with "…" so that it fits in `width` pixels."""
    text = " ".join(text.split())
    if font.getlength(text) <= width:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # longest prefix that fits with the ellipsis
        mid = (lo + hi + 1) // 2
        if font.getlength(text[:mid].rstrip() + "…") <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + "…" if lo else ""


def _draw_centered(
    draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], text: str, font: Font, ink: Color
) -> None:
    """Draw one line of text centred in `box` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    line = _fit_text(text, font, x1 - x0)
    if line:
        draw.text(((x0 + x1) / 2, (y0 + y1) / 2), line, fill=ink, font=font, anchor="mm")


def _as_images(images: Sequence[Tensor] | Tensor) -> list[Tensor]:
    """Validate the grid's input and return a list of (C, h, w) tensors, C in {1, 3}."""
    if isinstance(images, Tensor):
        if images.dim() != 4:
            raise UserInputError(
                "A batch of images for a grid must have shape (N, C, H, W), "
                f"got {tuple(images.shape)}; pass a list for single images."
            )
        seq: list[Tensor] = list(images.unbind(0))
    else:
        seq = list(images)
    if not seq:
        raise UserInputError("An image grid needs at least one image.")
    out: list[Tensor] = []
    for k, im in enumerate(seq):
        if not isinstance(im, Tensor):
            raise UserInputError(f"Grid image {k} must be a torch.Tensor, not {type(im).__name__}.")
        x = im.unsqueeze(0) if im.dim() == 2 else im
        if x.dim() != 3 or x.shape[0] not in (1, 3) or x.shape[1] == 0 or x.shape[2] == 0:
            raise UserInputError(
                f"Grid image {k} must have shape (3, H, W) or (1, H, W), got {tuple(im.shape)}."
            )
        out.append(x)
    return out


def default_tile(sizes: Sequence[tuple[int, int]]) -> int:
    """The tile side used when none is given: the largest image side, kept within 64..512."""
    largest = max(max(h, w) for h, w in sizes)
    return min(max(largest, _MIN_TILE), _MAX_TILE)


def grid_size(n: int, *, ncol: int, tile: int, pad: int, label_height: int = 0) -> tuple[int, int]:
    """The (width, height) in pixels of a grid of `n` tiles."""
    ncol = min(ncol, n)
    nrow = math.ceil(n / ncol)
    return ncol * tile + (ncol + 1) * pad, nrow * (tile + label_height) + (nrow + 1) * pad


def _fit(im: Image.Image, tile: int) -> Image.Image:
    """Scale `im` to fit a tile×tile box, keeping aspect.

    Small images grow by a whole factor with nearest-neighbour sampling, so pixels stay crisp
    and equal in size; large ones shrink with Lanczos filtering.
    """
    w, h = im.size
    scale = min(tile / w, tile / h)
    if scale >= 1:
        k = math.floor(scale)
        return im if k == 1 else im.resize((w * k, h * k), Image.Resampling.NEAREST)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return im.resize(size, Image.Resampling.LANCZOS)


def image_grid(
    images: Sequence[Tensor] | Tensor,
    *,
    ncol: int | None = None,
    labels: Sequence[str] | None = None,
    tile: int | None = None,
    pad: int = 4,
    background: tuple[int, int, int] = (255, 255, 255),
    label_height: int | None = None,
) -> Image.Image:
    """Tile (3, h, w) or (1, h, w) float images in [0, 1] into one RGB image.

    Each image is fit, centred, into a `tile`×`tile` box (sizes may differ); `ncol` defaults to
    a near-square layout. With `labels`, one line of text (cut to fit) goes under each tile.
    """
    ims = _as_images(images)
    n = len(ims)
    if labels is not None:
        labels = list(labels)
        if len(labels) != n:
            raise UserInputError(f"Got {len(labels)} labels for {n} grid images; they must match.")
    if ncol is None:
        ncol = math.ceil(math.sqrt(n))
    if ncol < 1:
        raise UserInputError(f"ncol must be at least 1, got {ncol}.")
    if tile is None:
        tile = default_tile([(int(x.shape[1]), int(x.shape[2])) for x in ims])
    if tile < 1:
        raise UserInputError(f"tile must be at least 1 pixel, got {tile}.")
    if pad < 0:
        raise UserInputError(f"pad must be 0 or more pixels, got {pad}.")
    bg = _check_color(background, "background")
    lh = 0
    font: Font | None = None
    if labels is not None:
        if label_height is None:
            font_px = min(16, max(10, tile // 8))
            lh = font_px + 6
        else:
            if label_height < 0:
                raise UserInputError(f"label_height must be 0 or more, got {label_height}.")
            lh = label_height
            font_px = max(1, lh - 6)
        font = text_font(font_px)
    ncol = min(ncol, n)
    width, height = grid_size(n, ncol=ncol, tile=tile, pad=pad, label_height=lh)
    canvas = Image.new("RGB", (width, height), bg)
    draw = ImageDraw.Draw(canvas)
    ink = ink_for(bg)
    for k, x in enumerate(ims):
        r, c = divmod(k, ncol)
        x0 = pad + c * (tile + pad)
        y0 = pad + r * (tile + lh + pad)
        pic = _fit(to_pil(x).convert("RGB"), tile)
        canvas.paste(pic, (x0 + (tile - pic.width) // 2, y0 + (tile - pic.height) // 2))
        if labels is not None and font is not None and lh > 0:
            _draw_centered(draw, (x0, y0 + tile, x0 + tile, y0 + tile + lh), labels[k], font, ink)
    return canvas


def titled(
    image: Image.Image,
    title: str,
    *,
    height: int | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """`image` with a title bar of one line of text (cut to fit) on top; returns a new RGB image."""
    if not isinstance(image, Image.Image):
        raise UserInputError(f"titled needs a PIL image, not {type(image).__name__}.")
    bg = _check_color(background, "background")
    if height is None:
        font_px = min(28, max(12, image.width // 24))
        height = font_px + 10
    else:
        if height < 0:
            raise UserInputError(f"The title height must be 0 or more, got {height}.")
        font_px = max(1, height - 10)
    out = Image.new("RGB", (image.width, image.height + height), bg)
    out.paste(image.convert("RGB"), (0, height))
    if height > 0:
        _draw_centered(
            ImageDraw.Draw(out),
            (2, 0, image.width - 2, height),
            title,
            text_font(font_px),
            ink_for(bg),
        )
    return out
