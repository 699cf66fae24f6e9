"""Attribution maps as pictures: colour heatmaps, overlays, signed gradients, method panels."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from convscope.errors import UserInputError
from convscope.render.grids import image_grid, titled
from convscope.render.maps import colorize

__all__ = [
    "heatmap",
    "heatmap_overlay",
    "normalize_map",
    "saliency_panel",
    "signed_gradient_image",
]


def _check_image(image: Tensor, what: str = "the image") -> Tensor:
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise UserInputError(f"{what} must have shape (3, H, W), got {shape}.")
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise UserInputError(f"{what} must not be empty, got shape {tuple(image.shape)}.")
    return image.detach().float().cpu()


def _check_map(values: Tensor, what: str = "a map") -> Tensor:
    if not isinstance(values, Tensor) or values.dim() != 2:
        shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise UserInputError(f"{what} must have shape (H, W), got {shape}.")
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise UserInputError(f"{what} must not be empty, got shape {tuple(values.shape)}.")
    return torch.nan_to_num(values.detach().float().cpu(), nan=0.0, posinf=0.0, neginf=0.0)


def _check_alpha(alpha: float) -> float:
    if not isinstance(alpha, (int, float)) or not 0.0 <= float(alpha) <= 1.0:
        raise UserInputError(f"alpha must be between 0 and 1, got {alpha!r}.")
    return float(alpha)


def normalize_map(values: Tensor, *, percentile: float = 100.0) -> Tensor:
    """(H, W) non-negative importance → [0, 1] by dividing by its maximum (or, below 100, by
    its `percentile`-th percentile, saturating the few values above it). Negative values
    become 0 and an all-zero map stays 0: dividing by the top, not stretching min..max, keeps
    zero meaning "no importance"."""
    m = _check_map(values).clamp(min=0)
    if not isinstance(percentile, (int, float)) or not 0.0 < float(percentile) <= 100.0:
        raise UserInputError(f"percentile must be in (0, 100], got {percentile!r}.")
    top = m.max()
    if float(percentile) < 100.0 and m.numel() > 1:
        q = torch.quantile(m.flatten(), float(percentile) / 100.0)
        top = q if q > 0 else top
    return (m / top).clamp(max=1.0) if top > 0 else torch.zeros_like(m)


def _resized(values: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(values.shape) == size:
        return values
    return F.interpolate(values[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]


def heatmap(values: Tensor, *, cmap: str = "jet", percentile: float = 100.0) -> Tensor:
    """(H, W) map → (3, H, W) colours: normalized by its maximum (see `normalize_map`),
    through `cmap`."""
    return colorize(normalize_map(values, percentile=percentile), cmap)


def heatmap_overlay(
    image: Tensor,
    values: Tensor,
    *,
    alpha: float = 0.5,
    cmap: str = "jet",
    percentile: float = 100.0,
    weighted: bool = False,
) -> Tensor:
    """A map over an image: `(1 - alpha) * image + alpha * heatmap(map)`, (3, H, W) in [0, 1].

    `image` is (3, H, W) in [0, 1] (as the model saw it); a map of another size is resized
    bilinearly to it. The map is normalized by its maximum (see `normalize_map`). With
    `weighted`, the blend at each pixel is `alpha` times the normalized map, so unimportant
    pixels show the image untouched (clearer for sparse, pixel-level maps)."""
    img = _check_image(image).clamp(0.0, 1.0)
    a = _check_alpha(alpha)
    m = _resized(_check_map(values), (int(img.shape[1]), int(img.shape[2])))
    norm = normalize_map(m, percentile=percentile)  # (H, W)
    heat = colorize(norm, cmap)  # (3, H, W)
    weight = a * norm.unsqueeze(0) if weighted else torch.tensor(a)
    return ((1.0 - weight) * img + weight * heat).clamp(0.0, 1.0)


def signed_gradient_image(g: Tensor, *, percentile: float = 99.5) -> Tensor:
    """A signed (3, H, W) gradient as an image: zero is mid-gray and ± the `percentile`-th
    percentile of |g| maps to 0 / 1 (larger values saturate), per colour channel as computed.

    A high percentile rather than the maximum keeps a few extreme pixels from turning the
    picture flat gray."""
    x = _check_image(g, "a gradient")
    x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    if not isinstance(percentile, (int, float)) or not 0.0 < float(percentile) <= 100.0:
        raise UserInputError(f"percentile must be in (0, 100], got {percentile!r}.")
    mags = x.abs().flatten()
    scale = torch.quantile(mags, float(percentile) / 100.0) if mags.numel() > 1 else mags.max()
    if not scale > 0:
        scale = mags.max()
    if not scale > 0:
        return torch.full_like(x, 0.5)
    return (x / scale * 0.5 + 0.5).clamp(0.0, 1.0)


def _tile(height: int, width: int) -> int:
    """Tile side for a panel: whole-factor enlargement of small images, at most 320."""
    side = max(height, width)
    if side >= 224:
        return min(side, 320)
    return side * -(-224 // side)


def saliency_panel(
    image: Tensor,
    maps: Mapping[str, Tensor],
    *,
    title: str,
    signed: Tensor | None = None,
    alpha: float = 0.7,
    cmap: str = "jet",
    percentile: float = 99.0,
    tile: int | None = None,
) -> Image.Image:
    """One image explained by several methods, labelled, as a PIL image.

    Top row: the input, then each method's map as a heatmap; bottom row: each map over the
    input, blended in proportion to its importance (`weighted` in `heatmap_overlay`), so
    unimportant pixels show the image. Each map is scaled to its own `percentile`-th
    percentile (99: the sparse pixel-level maps of gradient methods stay visible; smooth maps
    such as Grad-CAM barely change). With `signed` (a (3, H, W) gradient, e.g. the guided
    one), its signed picture sits under the input; otherwise that cell is empty."""
    img = _check_image(image).clamp(0.0, 1.0)
    if not isinstance(maps, Mapping) or not maps:
        raise UserInputError("a saliency panel needs at least one map.")
    h, w = int(img.shape[1]), int(img.shape[2])
    names = list(maps)
    checked = {n: _resized(_check_map(maps[n], f"the {n} map"), (h, w)) for n in names}
    top = [img, *(heatmap(checked[n], cmap=cmap, percentile=percentile) for n in names)]
    top_labels = [f"input {w}x{h}", *names]
    if signed is not None:
        first = signed_gradient_image(signed)
        if tuple(first.shape[1:]) != (h, w):
            raise UserInputError(
                f"the signed gradient is {tuple(first.shape[1:])}, the image {(h, w)}."
            )
        first_label = "guided (signed)"
    else:
        first, first_label = torch.ones_like(img), ""
    overlays = [
        heatmap_overlay(
            img, checked[n], alpha=alpha, cmap=cmap, percentile=percentile, weighted=True
        )
        for n in names
    ]
    bottom_labels = [first_label, *(f"{n} over input" for n in names)]
    grid = image_grid(
        [*top, first, *overlays],
        labels=[*top_labels, *bottom_labels],
        ncol=len(top),
        tile=tile if tile is not None else _tile(h, w),
    )
    return titled(grid, title, height=30)
