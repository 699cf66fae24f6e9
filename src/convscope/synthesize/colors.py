"""Colour control for neural style transfer: keep the content's colours, or recolour the style.

    result = original_colors(stylized, content)            # --original-colors
    style = color_transfer(style, content, "histogram")    # --color-transfer histogram|lab

Gatys, Ecker, Bethge, Hertzmann & Shechtman (2017), "Controlling Perceptual Factors in Neural
Style Transfer" (CVPR), §5, give two ways to keep the content's colours while transferring the
style's strokes; jcjohnson/neural-style exposes them as `-original_colors` and the colour
pre-processing of the style image.

- **Luminance-only transfer** (`original_colors`): the stylized output's luminance Y with the
  content's chroma Cb, Cr, converted back to RGB and clamped to [0, 1]. Differentiable in
  `output` (plain torch ops).
- **Colour histogram matching of the style image** (`color_transfer`, before the transfer): the
  style image is recoloured to the content's palette, so the style contributes its brush
  strokes but not its colours.
  - `"histogram"` (`match_histograms`): each RGB channel is mapped monotonically so that its
    empirical CDF becomes the reference's, F_ref⁻¹(F_src(x)), by
    `skimage.exposure.match_histograms(..., channel_axis=-1)`.
  - `"lab"` (`lab_transfer`): Reinhard, Ashikhmin, Gooch & Shirley (2001), "Color Transfer
    between Images" (IEEE CG&A 21(5)): in each channel of CIE L*a*b* (sRGB, D65, via
    `skimage.color.rgb2lab` / `lab2rgb`), x ↦ (x − μ_src) · σ_ref / σ_src + μ_ref, with the
    population standard deviation; back to RGB and clamped to [0, 1]. (Reinhard et al. used
    Ruderman's lαβ space; CIE L*a*b* is the common modern stand-in, with the same idea of
    decorrelated opponent channels.)

The two transfers run in numpy (float64) and are not differentiable: they pre-process an
image once, they are not part of the optimized graph.

YCbCr is ITU-R BT.601 full range, as in JPEG/JFIF, with K_R = 0.299, K_B = 0.114,
K_G = 1 − K_R − K_B = 0.587, on RGB in [0, 1]:

    Y  = 0.299 R + 0.587 G + 0.114 B                     ∈ [0, 1]
    Cb = 0.5 + (B − Y) / 1.772   (1.772 = 2 (1 − K_B))   ∈ [0, 1]
    Cr = 0.5 + (R − Y) / 1.402   (1.402 = 2 (1 − K_R))   ∈ [0, 1]

i.e. Cb = 0.5 − 0.168736 R − 0.331264 G + 0.5 B and Cr = 0.5 + 0.5 R − 0.418688 G − 0.081312 B
(the JFIF coefficients, which are these fractions rounded), and its inverse

    R = Y + 1.402 (Cr − 0.5)
    G = Y − 0.344136 (Cb − 0.5) − 0.714136 (Cr − 0.5)
    B = Y + 1.772 (Cb − 0.5)

The matrices are computed from K_R and K_B, so the round trip is exact up to float rounding.

Images are tensors in [0, 1] of shape (3, H, W) or (B, 3, H, W); each function returns the
caller's layout (that of `source` / `output`) and never modifies its inputs. A reference (or
content) image may be one image for the whole batch or one per image, and of any size.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from numpy.typing import NDArray
from skimage.color import lab2rgb, rgb2lab
from skimage.exposure import match_histograms as _sk_match_histograms
from torch import Tensor

from convscope.errors import UnknownNameError, UserInputError
from convscope.synthesize.octaves import resize

__all__ = [
    "COLOR_TRANSFERS",
    "color_transfer",
    "lab_transfer",
    "match_histograms",
    "original_colors",
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
]

COLOR_TRANSFERS: tuple[str, ...] = ("histogram", "lab")
"""The methods `color_transfer` knows, as the CLI's `--color-transfer` spells them."""

_KR, _KB = 0.299, 0.114
_KG = 1.0 - _KR - _KB
_CB, _CR = 2.0 * (1.0 - _KB), 2.0 * (1.0 - _KR)  # 1.772, 1.402

# rows: Y, Cb − 0.5, Cr − 0.5 from R, G, B
_RGB_TO_YCBCR = (
    (_KR, _KG, _KB),
    (-_KR / _CB, -_KG / _CB, (1.0 - _KB) / _CB),
    ((1.0 - _KR) / _CR, -_KG / _CR, -_KB / _CR),
)
# rows: R, G, B from Y, Cb − 0.5, Cr − 0.5
_YCBCR_TO_RGB = (
    (1.0, 0.0, _CR),
    (1.0, -_KB * _CB / _KG, -_KR * _CR / _KG),
    (1.0, _CB, 0.0),
)
_OFFSET = (0.0, 0.5, 0.5)

_EPS = 1e-8  # a flat channel's standard deviation, for the division in `lab_transfer`


# ---- checks at the boundary ----------------------------------------------------------------
def _batched(image: object, name: str) -> tuple[Tensor, bool]:
    """`image` as (B, 3, H, W), and whether the caller gave a batch."""
    if not isinstance(image, Tensor):
        raise UserInputError(f"the {name} must be a torch tensor, got {type(image).__name__}.")
    shape = tuple(image.shape)
    if image.dim() not in (3, 4) or image.shape[-3] != 3 or image.numel() == 0:
        raise UserInputError(
            f"the {name} must be a non-empty RGB image (3, H, W) or batch (B, 3, H, W), "
            f"got shape {shape}."
        )
    if not image.is_floating_point():
        raise UserInputError(
            f"the {name} must be a floating-point image in [0, 1], got dtype {image.dtype}."
        )
    if not bool(torch.isfinite(image).all()):
        raise UserInputError(f"the {name} contains NaN or infinite values.")
    return (image if image.dim() == 4 else image.unsqueeze(0)), image.dim() == 4


def _pair(reference: Tensor, n: int, name: str, of: str) -> Tensor:
    """`reference` (B', 3, h, w) broadcast against a batch of `n`: B' must be 1 or `n`."""
    if reference.shape[0] not in (1, n):
        raise UserInputError(
            f"the {name} has {reference.shape[0]} images for the {of}'s {n}; "
            f"give one image or one per {of} image."
        )
    return reference.expand(n, -1, -1, -1) if reference.shape[0] != n else reference


def _layout(image: Tensor, batched: bool) -> Tensor:
    return image if batched else image[0]


def _apply(matrix: tuple[tuple[float, ...], ...], image: Tensor) -> Tensor:
    """(…, 3, H, W) → (…, 3, H, W): a 3×3 colour matrix applied to every pixel."""
    m = torch.tensor(matrix, dtype=image.dtype, device=image.device)
    return torch.einsum("ij,...jhw->...ihw", m, image)


def _offset(like: Tensor) -> Tensor:
    return torch.tensor(_OFFSET, dtype=like.dtype, device=like.device)[:, None, None]  # (3, 1, 1)


def _to_ycbcr(rgb: Tensor) -> Tensor:
    return _apply(_RGB_TO_YCBCR, rgb) + _offset(rgb)


def _to_rgb(ycbcr: Tensor) -> Tensor:
    return _apply(_YCBCR_TO_RGB, ycbcr - _offset(ycbcr))


# ---- YCbCr ---------------------------------------------------------------------------------
def rgb_to_ycbcr(rgb: Tensor) -> Tensor:
    """RGB in [0, 1] → YCbCr (ITU-R BT.601 full range, JPEG): Y in [0, 1], Cb and Cr centred
    at 0.5. (3, H, W) or (B, 3, H, W), same layout out; differentiable."""
    _batched(rgb, "RGB image")
    return _to_ycbcr(rgb)


def ycbcr_to_rgb(ycbcr: Tensor) -> Tensor:
    """The exact inverse of `rgb_to_ycbcr` (up to float rounding); not clamped, so colours
    outside the RGB cube come back outside [0, 1]. Differentiable."""
    _batched(ycbcr, "YCbCr image")
    return _to_rgb(ycbcr)


# ---- luminance-only transfer ---------------------------------------------------------------
def original_colors(output: Tensor, content: Tensor) -> Tensor:
    """The stylized `output`'s luminance Y with the `content`'s chroma (Cb, Cr), back in RGB
    and clamped to [0, 1] (Gatys et al. 2017, luminance-only transfer; neural-style's
    `-original_colors 1`). `content` is resized (bilinear, antialiased when shrinking) to the
    output's H × W if the sizes differ; one content image may serve a whole batch. The result
    has the output's layout, dtype and device, and is differentiable in `output`."""
    out, batched = _batched(output, "output")  # (B, 3, H, W)
    con, _ = _batched(content, "content image")  # (B', 3, h, w)
    con = _pair(con, out.shape[0], "content image", "output")
    con = resize(con.to(dtype=out.dtype, device=out.device), (out.shape[-2], out.shape[-1]))
    y = _to_ycbcr(out)[:, :1]  # (B, 1, H, W)
    cbcr = _to_ycbcr(con)[:, 1:]  # (B, 2, H, W)
    rgb = _to_rgb(torch.cat([y, cbcr], dim=1)).clamp(0.0, 1.0)
    return _layout(rgb, batched)


# ---- colour transfer to the style image ----------------------------------------------------
def _to_numpy(image: Tensor) -> NDArray[np.float64]:
    """(3, H, W) tensor → (H, W, 3) float64 array."""
    return image.detach().to(device="cpu", dtype=torch.float64).permute(1, 2, 0).numpy()


def _per_image(
    source: Tensor,
    reference: Tensor,
    fn: Callable[[NDArray[np.float64], NDArray[np.float64]], NDArray[np.float64]],
) -> Tensor:
    """Apply `fn((H, W, 3) source, (h, w, 3) reference) → (H, W, 3)` to each image, in
    float64 numpy, and come back as a clamped tensor in the source's layout, dtype and device."""
    src, batched = _batched(source, "source image")  # (B, 3, H, W)
    ref, _ = _batched(reference, "reference image")  # (B', 3, h, w)
    ref = _pair(ref, src.shape[0], "reference image", "source")
    out = [
        torch.from_numpy(np.ascontiguousarray(fn(_to_numpy(s), _to_numpy(r)))).permute(2, 0, 1)
        for s, r in zip(src, ref, strict=True)
    ]
    result = torch.stack(out).clamp(0.0, 1.0).to(dtype=src.dtype, device=src.device)
    return _layout(result, batched)


def _histograms(src: NDArray[np.float64], ref: NDArray[np.float64]) -> NDArray[np.float64]:
    matched: NDArray[np.float64] = np.asarray(
        _sk_match_histograms(src, ref, channel_axis=-1), dtype=np.float64
    )
    return matched


def _reinhard(src: NDArray[np.float64], ref: NDArray[np.float64]) -> NDArray[np.float64]:
    s = np.asarray(rgb2lab(np.clip(src, 0.0, 1.0)), dtype=np.float64)  # (H, W, 3) L*a*b*
    r = np.asarray(rgb2lab(np.clip(ref, 0.0, 1.0)), dtype=np.float64)  # (h, w, 3)
    mu_s, sd_s = s.mean(axis=(0, 1)), s.std(axis=(0, 1))
    mu_r, sd_r = r.mean(axis=(0, 1)), r.std(axis=(0, 1))
    lab = (s - mu_s) * (sd_r / np.maximum(sd_s, _EPS)) + mu_r
    with warnings.catch_warnings():
        # out-of-gamut colours: lab2rgb clips negative Z and warns; the result is clamped anyway
        warnings.filterwarnings("ignore", message=".*negative Z values.*")
        rgb: NDArray[np.float64] = np.asarray(lab2rgb(lab), dtype=np.float64)
    return rgb


def match_histograms(source: Tensor, reference: Tensor) -> Tensor:
    """`source` recoloured so that each RGB channel's empirical CDF is the `reference`'s: a
    monotone map per channel (`skimage.exposure.match_histograms`). The images may differ in
    size; a single reference may serve a batch of sources. Not differentiable."""
    return _per_image(source, reference, _histograms)


def lab_transfer(source: Tensor, reference: Tensor) -> Tensor:
    """Reinhard et al. (2001) colour transfer: `source`'s per-channel mean and standard
    deviation in CIE L*a*b* set to the `reference`'s, back to RGB and clamped to [0, 1]. The
    images may differ in size; a single reference may serve a batch. Not differentiable."""
    return _per_image(source, reference, _reinhard)


_TRANSFERS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "histogram": match_histograms,
    "lab": lab_transfer,
}


def color_transfer(source: Tensor, reference: Tensor, method: str) -> Tensor:
    """`source` (the style image) recoloured to `reference`'s (the content image's) colours by
    `method`, one of `COLOR_TRANSFERS`: `"histogram"` (`match_histograms`) or `"lab"`
    (`lab_transfer`)."""
    if not isinstance(method, str) or method not in _TRANSFERS:
        raise UnknownNameError("color transfer", str(method), COLOR_TRANSFERS)
    return _TRANSFERS[method](source, reference)
