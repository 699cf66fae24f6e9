"""Saliency → object mask: a saliency map seeds OpenCV's GrabCut (Rother et al. 2004).

A saliency map says roughly *where* the evidence for a class is; GrabCut turns that rough,
blotchy map into a mask that follows the object's colour edges. The map is split by its own
quantiles into GrabCut's four seed labels (`cv2.grabCut` with `GC_INIT_WITH_MASK`):

    saliency ≥ q(fg_quantile)                         sure foreground      (top 5 % by default)
    q(probable_fg_quantile) ≤ saliency < q(fg_q…)     probable foreground  (next 25 %)
    q(bg_quantile) < saliency < q(probable_fg_q…)     probable background  (next 40 %)
    saliency ≤ q(bg_quantile)                         sure background      (bottom 30 %)

plus, optionally, a band of sure background along the image border (`border`, off by default:
the objects of classification crops often touch the border). GrabCut then fits colour GMMs to
the two sides and re-labels the *probable* pixels only; sure pixels keep their labels.

The defaults suit the maps of `convscope.attribute` on 224×224 ImageNet crops; every threshold
can be overridden (the CLI exposes them as `--fg-quantile`, `--probable-fg-quantile` and
`--bg-quantile`). Raise `fg_quantile` when the mask leaks, lower `bg_quantile` when it misses
parts of the object.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from convscope.attribute.maps import check_map, gaussian_smooth
from convscope.errors import UserInputError

__all__ = [
    "DEFAULT_BG_QUANTILE",
    "DEFAULT_FG_QUANTILE",
    "DEFAULT_PROBABLE_FG_QUANTILE",
    "check_quantiles",
    "cutout_rgba",
    "grabcut_segment",
    "seed_labels",
]

DEFAULT_FG_QUANTILE = 0.95
DEFAULT_PROBABLE_FG_QUANTILE = 0.70
DEFAULT_BG_QUANTILE = 0.30

# GrabCut's labels (cv2.GC_BGD, GC_FGD, GC_PR_BGD, GC_PR_FGD), fixed by OpenCV's API.
_BGD, _FGD, _PR_BGD, _PR_FGD = 0, 1, 2, 3


def check_quantiles(fg_quantile: float, probable_fg_quantile: float, bg_quantile: float) -> None:
    """Raise a one-sentence error unless 0 ≤ bg < probable-fg ≤ fg < 1."""
    for name, q in (
        ("fg-quantile", fg_quantile),
        ("probable-fg-quantile", probable_fg_quantile),
        ("bg-quantile", bg_quantile),
    ):
        if not (isinstance(q, int | float) and math.isfinite(q) and 0.0 <= q < 1.0):
            raise UserInputError(f"{name} must be a number in [0, 1), got {q!r}.")
    if bg_quantile >= fg_quantile:
        raise UserInputError(
            f"bg-quantile ({bg_quantile}) must be below fg-quantile ({fg_quantile})."
        )
    if not bg_quantile < probable_fg_quantile <= fg_quantile:
        raise UserInputError(
            f"probable-fg-quantile ({probable_fg_quantile}) must lie above bg-quantile "
            f"({bg_quantile}) and at most fg-quantile ({fg_quantile})."
        )


def _check_image(image: Tensor) -> Tensor:
    if not isinstance(image, Tensor):
        raise UserInputError(f"the image must be a torch.Tensor, not {type(image).__name__}.")
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[0] != 3 or image.shape[1] < 2 or image.shape[2] < 2:
        raise UserInputError(f"the image must have shape (3, H, W), got {tuple(image.shape)}.")
    if not image.is_floating_point():
        raise UserInputError(f"the image must hold floats in [0, 1], got dtype {image.dtype}.")
    return image.detach().float().cpu()


def seed_labels(
    saliency: Tensor,
    *,
    fg_quantile: float = DEFAULT_FG_QUANTILE,
    bg_quantile: float = DEFAULT_BG_QUANTILE,
    probable_fg_quantile: float = DEFAULT_PROBABLE_FG_QUANTILE,
    border: int = 0,
) -> Tensor:
    """The GrabCut seed labels (H, W) uint8 (0 sure bg, 1 sure fg, 2 probable bg, 3 probable
    fg) that `grabcut_segment` derives from a saliency map; see the module docstring.

    Ties are resolved towards the background: a pixel is foreground only if it is strictly more
    salient than the background threshold, so a map that is mostly zero seeds no foreground
    among its zeros. A map without any sure foreground raises a one-sentence error."""
    check_quantiles(fg_quantile, probable_fg_quantile, bg_quantile)
    s = saliency.detach().float().cpu()
    if s.dim() != 2 or 0 in s.shape:
        raise UserInputError(f"the saliency map must have shape (H, W), got {tuple(s.shape)}.")
    if not bool(torch.isfinite(s).all()):
        raise UserInputError("the saliency map contains NaN or infinite values.")
    lo, hi = float(s.min()), float(s.max())
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        raise UserInputError("the saliency map is constant, so it cannot seed a segmentation.")
    flat = s.flatten().double()
    qs = torch.tensor([bg_quantile, probable_fg_quantile, fg_quantile], dtype=torch.float64)
    t_bg, t_pfg, t_fg = (float(v) for v in torch.quantile(flat, qs))
    above_bg = s > t_bg
    labels = torch.full(s.shape, _PR_BGD, dtype=torch.uint8)
    labels[~above_bg] = _BGD
    labels[above_bg & (s >= t_pfg)] = _PR_FGD
    sure_fg = above_bg & (s >= t_fg)
    labels[sure_fg] = _FGD
    if border > 0:
        band = torch.zeros(s.shape, dtype=torch.bool)
        band[:border] = band[-border:] = True
        band[:, :border] = band[:, -border:] = True
        labels[band & ~sure_fg] = _BGD
    if not bool((labels == _FGD).any()):
        raise UserInputError(
            f"the saliency map has no pixels above its {fg_quantile:.0%} quantile that stand "
            "out from the background; lower --fg-quantile or --bg-quantile."
        )
    if not bool(((labels == _BGD) | (labels == _PR_BGD)).any()):
        raise UserInputError("the seeds leave no background; raise --bg-quantile.")
    return labels


def grabcut_segment(
    image: Tensor,
    saliency: Tensor,
    *,
    fg_quantile: float = DEFAULT_FG_QUANTILE,
    bg_quantile: float = DEFAULT_BG_QUANTILE,
    probable_fg_quantile: float = DEFAULT_PROBABLE_FG_QUANTILE,
    iterations: int = 5,
    smooth: float = 0.03,
    border: int = 0,
    min_area: float = 0.005,
    seed: int = 0,
) -> Tensor:
    """Segment the object a saliency map points at. Returns an (H, W) bool mask (True =
    object) at the image's size.

    Args:
        image: (3, H, W) RGB floats in [0, 1], e.g. the crop the model saw.
        saliency: (H, W) map, larger = more salient (any scale; resized to the image if its
            size differs).
        fg_quantile, probable_fg_quantile, bg_quantile: the seed thresholds, as quantiles of
            the map (module docstring); 0 ≤ bg < probable-fg ≤ fg < 1.
        iterations: GrabCut iterations.
        smooth: Gaussian blur of the map before thresholding, as a fraction of the image's
            short side (0 = none); gradient maps are speckled, and seeds work better as blobs.
        border: width in pixels of a band of sure background along the border (0 = none).
        min_area: parts of the mask smaller than this fraction of the image are dropped
            (GrabCut leaves specks where a colour happens to match the object); the largest
            part is always kept. 0 keeps everything.
        seed: seed of OpenCV's RNG (GrabCut initializes its colour models with k-means), so
            that results are repeatable.
    """
    import cv2

    img = _check_image(image)
    _, h, w = img.shape
    check_quantiles(fg_quantile, probable_fg_quantile, bg_quantile)
    if not (isinstance(iterations, int) and iterations >= 1):
        raise UserInputError(f"iterations must be a positive integer, got {iterations!r}.")
    if not (math.isfinite(smooth) and 0 <= smooth < 1):
        raise UserInputError(f"smooth must be a fraction in [0, 1), got {smooth!r}.")
    if not (math.isfinite(min_area) and 0 <= min_area < 1):
        raise UserInputError(f"min_area must be a fraction in [0, 1), got {min_area!r}.")
    if border < 0 or 2 * border >= min(h, w):
        raise UserInputError(f"border must be in 0..{(min(h, w) - 1) // 2} px, got {border}.")
    s = check_map(saliency, (h, w))
    s = gaussian_smooth(s, smooth * min(h, w))
    labels = seed_labels(
        s,
        fg_quantile=fg_quantile,
        bg_quantile=bg_quantile,
        probable_fg_quantile=probable_fg_quantile,
        border=border,
    )
    rgb = img.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    mask = np.ascontiguousarray(labels.numpy())
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(seed)
    try:
        # The rect is ignored with GC_INIT_WITH_MASK; the whole image is given.
        result, _, _ = cv2.grabCut(
            bgr, mask, (0, 0, w, h), bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK
        )
    except cv2.error as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "OpenCV error"
        raise UserInputError(f"GrabCut failed on this image and map ({first}).") from None
    out = np.asarray(result)
    fg = ((out == _FGD) | (out == _PR_FGD)).astype(np.uint8)
    if min_area > 0:
        fg = _drop_small_parts(fg, min_area * h * w)
    return torch.from_numpy(fg.astype(bool))


def _drop_small_parts(mask: np.ndarray[Any, Any], min_pixels: float) -> np.ndarray[Any, Any]:
    """Remove the connected parts (8-connectivity) of a 0/1 mask smaller than `min_pixels`,
    keeping at least the largest part."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 2:  # background plus at most one part
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= min_pixels) + 1
    if keep.size == 0:
        keep = np.array([int(np.argmax(areas)) + 1])
    return np.isin(labels, keep).astype(np.uint8)


def cutout_rgba(image: Tensor, mask: Tensor) -> Image.Image:
    """The image with a transparent background: an RGBA Pillow image whose alpha is 255 on the
    mask and 0 elsewhere (colour kept where opaque, black where transparent)."""
    img = _check_image(image)
    if not isinstance(mask, Tensor) or tuple(mask.shape) != tuple(img.shape[1:]):
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise UserInputError(
            f"the mask must be an (H, W) tensor the size of the image {tuple(img.shape[1:])}, "
            f"got {shape}."
        )
    keep = mask.detach().cpu().bool()
    rgb = img.clamp(0, 1).mul(255).round().to(torch.uint8) * keep  # (3, H, W)
    alpha = keep.to(torch.uint8) * 255
    rgba = torch.cat([rgb, alpha[None]]).permute(1, 2, 0).contiguous().numpy()
    return Image.fromarray(rgba)
