"""Composing finished pictures into one: side by side, stacked, and cut-outs on a
checkerboard. Every function takes and returns Pillow images."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from convscope.errors import UserInputError

__all__ = ["on_checkerboard", "side_by_side", "stack_panels"]

Color = tuple[int, int, int]
WHITE: Color = (255, 255, 255)


def _check(images: Sequence[Image.Image], what: str) -> None:
    if not images:
        raise UserInputError(f"nothing to {what}.")


def side_by_side(
    images: Sequence[Image.Image], *, gap: int = 16, background: Color = WHITE
) -> Image.Image:
    """Images placed left to right, top-aligned, `gap` pixels apart, on `background`."""
    _check(images, "place side by side")
    width = sum(im.width for im in images) + gap * (len(images) - 1)
    height = max(im.height for im in images)
    canvas = Image.new("RGB", (width, height), background)
    x = 0
    for im in images:
        canvas.paste(im.convert("RGB"), (x, 0))
        x += im.width + gap
    return canvas


def stack_panels(
    panels: Sequence[Image.Image], *, gap: int = 12, background: Color = WHITE
) -> Image.Image:
    """Panels top to bottom, each centred, `gap` pixels apart; one panel is returned as it
    is."""
    _check(panels, "stack")
    if len(panels) == 1:
        return panels[0]
    width = max(p.width for p in panels)
    height = sum(p.height for p in panels) + gap * (len(panels) - 1)
    canvas = Image.new("RGB", (width, height), background)
    y = 0
    for p in panels:
        canvas.paste(p.convert("RGB"), ((width - p.width) // 2, y))
        y += p.height + gap
    return canvas


def on_checkerboard(cutout: Image.Image, cell: int = 8) -> Image.Image:
    """An RGBA cut-out over a light-gray checkerboard, as image editors show transparency."""
    if cell < 1:
        raise UserInputError(f"the checkerboard cell must be at least 1 px, got {cell}.")
    w, h = cutout.size
    yy, xx = np.mgrid[0:h, 0:w]
    checks = ((yy // cell) + (xx // cell)) % 2
    board = (230 - 25 * checks).astype(np.uint8)
    bg = Image.fromarray(board).convert("RGBA")
    bg.alpha_composite(cutout.convert("RGBA"))
    return bg.convert("RGB")
