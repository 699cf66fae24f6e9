"""Reading and writing images: files ↔ (3, H, W) float32 RGB tensors in [0, 1].

Every unusable input becomes a one-sentence `UserInputError` that names the file.
"""

from __future__ import annotations

import contextlib
import io
import struct
import threading
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo
from torch import Tensor

from convscope.data.files import atomic_path, atomic_paths
from convscope.errors import UserInputError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "from_pil",
    "load_image",
    "png_bytes",
    "png_text",
    "save_image",
    "save_png",
    "save_pngs",
    "to_pil",
]

DEFAULT_MAX_PIXELS = 100_000_000
"""Images with more pixels than this are refused before decoding (`--max-pixels` raises it)."""

IMAGE_SUFFIXES: tuple[str, ...] = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
)
"""File suffixes (lower case) treated as images when scanning folders."""

_SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, zlib.error)
_PILLOW_GUARD_LOCK = threading.RLock()

FloatArray = NDArray[np.float32]


@contextlib.contextmanager
def _own_pixel_guard() -> Iterator[None]:
    """Switch Pillow's decompression-bomb check off for one call, so that ours governs."""
    with _PILLOW_GUARD_LOCK:
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = old


def _reason(exc: BaseException) -> str:
    """An exception's text, fit to sit inside parentheses in a sentence."""
    text = " ".join(str(exc).split()).rstrip(".")
    return text or type(exc).__name__


def _check_file(p: Path) -> None:
    """Raise a one-sentence error if `p` is not a non-empty regular file."""
    if not p.exists():
        raise UserInputError(f"Image file {p} does not exist.")
    if p.is_dir():
        raise UserInputError(f"{p} is a folder, not an image file.")
    if p.stat().st_size == 0:
        raise UserInputError(f"Image file {p} is empty (0 bytes).")


def _stretch(a: NDArray[np.float64]) -> FloatArray:
    """Min-max normalize to [0, 1] (a constant image becomes 0)."""
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.float32)
    return ((a - lo) / (hi - lo)).astype(np.float32)


def _pil_to_chw(im: Image.Image, what: str) -> FloatArray:
    """Any Pillow image → (3, H, W) float32 RGB in [0, 1]; transparency composited over white."""
    mode = im.mode
    gray: FloatArray | None = None
    if mode in _SIXTEEN_BIT:
        gray = np.asarray(im).astype(np.float32) / 65535.0  # (H, W)
    elif mode == "I":  # 32-bit ints; 16-bit PNGs open like this in some Pillow versions
        a = np.asarray(im).astype(np.float64)
        if a.size == 0 or (a.min() >= 0 and a.max() <= 65535):
            gray = (a / 65535.0).astype(np.float32)
        else:
            gray = _stretch(a)
    elif mode == "F":  # floats: kept when already in [0, 1], stretched otherwise
        a = np.asarray(im).astype(np.float64)
        if a.size == 0 or (np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1):
            gray = a.astype(np.float32)
        else:
            gray = _stretch(a)
    elif mode in ("1", "L") and "transparency" not in im.info:
        gray = np.asarray(im.convert("L")).astype(np.float32) / 255.0
    if gray is not None:
        return np.ascontiguousarray(np.broadcast_to(gray, (3, *gray.shape)))
    bands = im.getbands()
    try:
        if "A" in bands or "a" in bands or "transparency" in im.info:
            rgba = np.asarray(im.convert("RGBA")).astype(np.float32) / 255.0  # (H, W, 4)
            alpha = rgba[..., 3:]
            hwc = rgba[..., :3] * alpha + (1.0 - alpha)  # over white
        else:
            hwc = np.asarray(im.convert("RGB")).astype(np.float32) / 255.0  # (H, W, 3)
    except ValueError as exc:
        raise UserInputError(
            f"{what} has colour mode {mode}, which cannot be converted to RGB ({_reason(exc)})."
        ) from exc
    return np.ascontiguousarray(hwc.transpose(2, 0, 1)).astype(np.float32, copy=False)


def _oriented(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag; a broken EXIF block is ignored, not fatal."""
    try:
        out = ImageOps.exif_transpose(im)
    except (*_DECODE_ERRORS, KeyError, TypeError):
        return im
    return im if out is None else out


def load_image(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Tensor:
    """Read an image file as a (3, H, W) float32 RGB tensor in [0, 1].

    Any mode Pillow reads is accepted (16-bit, palette, alpha composited over white, CMYK, …);
    EXIF orientation is applied and animated images give their first frame. Images with more
    than `max_pixels` pixels are refused before decoding; `None` disables the limit.
    """
    p = Path(path)
    if max_pixels is not None and max_pixels <= 0:
        raise UserInputError(f"max_pixels must be a positive number, got {max_pixels}.")
    _check_file(p)
    try:
        with _own_pixel_guard(), Image.open(p) as im:
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                raise UserInputError(
                    f"{p} is {w}×{h} = {w * h:,} pixels, more than the limit of "
                    f"{max_pixels:,}; raise the limit with --max-pixels N (max_pixels= in Python)."
                )
            im.load()  # full decode: truncated or corrupt data fails here
            chw = _pil_to_chw(_oriented(im), str(p))  # (3, H, W)
    except UserInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UserInputError(
            f"{p} is larger than Pillow's decompression-bomb limit; "
            "raise the limit with --max-pixels N (max_pixels= in Python)."
        ) from exc
    except UnidentifiedImageError as exc:
        raise UserInputError(f"{p} is not an image file that Pillow can read.") from exc
    except PermissionError as exc:
        raise UserInputError(f"Image file {p} cannot be read: permission denied.") from exc
    except MemoryError as exc:
        raise UserInputError(f"{p} is too large to decode in the memory available.") from exc
    except _DECODE_ERRORS as exc:
        raise UserInputError(f"{p} is a truncated or corrupt image ({_reason(exc)}).") from exc
    return torch.from_numpy(chw)


def from_pil(img: Image.Image) -> Tensor:
    """A Pillow image as a (3, H, W) float32 RGB tensor in [0, 1] (alpha over white)."""
    if not isinstance(img, Image.Image):
        raise UserInputError(f"from_pil needs a PIL image, not {type(img).__name__}.")
    return torch.from_numpy(_pil_to_chw(img, "the image"))


def to_pil(image: Tensor) -> Image.Image:
    """A (3, H, W), (1, H, W) or (H, W) tensor of floats in [0, 1] as an RGB or L Pillow image.

    Values are clamped to [0, 1] and rounded (NaN becomes 0); uint8 tensors are taken as is.
    The caller's tensor is never modified.
    """
    if not isinstance(image, Tensor):
        raise UserInputError(f"to_pil needs a torch.Tensor, not {type(image).__name__}.")
    x = image.detach()
    if x.dim() == 2:
        x = x.unsqueeze(0)  # (1, H, W)
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        raise UserInputError(
            f"An image must have shape (3, H, W), (1, H, W) or (H, W), got {tuple(image.shape)}."
        )
    if x.shape[1] == 0 or x.shape[2] == 0:
        raise UserInputError(f"An image must not be empty, got shape {tuple(image.shape)}.")
    if x.dtype == torch.uint8:
        u8 = x
    elif x.dtype == torch.bool:
        u8 = x.to(torch.uint8) * 255
    elif x.is_floating_point():
        f = torch.nan_to_num(x.float(), nan=0.0, posinf=1.0, neginf=0.0)
        u8 = f.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    else:
        raise UserInputError(f"An image must hold floats in [0, 1], got dtype {image.dtype}.")
    arr = u8.cpu().numpy()  # (C, H, W)
    if arr.shape[0] == 1:
        return Image.fromarray(np.ascontiguousarray(arr[0]))
    return Image.fromarray(np.ascontiguousarray(arr.transpose(1, 2, 0)))


def _ndarray_to_pil(a: NDArray[np.generic]) -> Image.Image:
    """A numpy image ((H, W), (H, W, C) or unambiguous (C, H, W)) as a Pillow image."""
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[2] not in (1, 3, 4):
        a = a.transpose(1, 2, 0)  # (C, H, W) → (H, W, C)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))) or 0 in a.shape:
        raise UserInputError(
            f"A numpy image must have shape (H, W), (H, W, 3) or (H, W, 4), got {a.shape}."
        )
    if a.dtype == np.uint8:
        u8 = a
    elif a.dtype == np.bool_:
        u8 = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        f = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)
        u8 = np.round(np.clip(f, 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        raise UserInputError(
            f"A numpy image must hold uint8 values or floats in [0, 1], got dtype {a.dtype}."
        )
    return Image.fromarray(np.ascontiguousarray(u8))


def _as_pil(image: Tensor | Image.Image | NDArray[np.generic]) -> Image.Image:
    """Whatever image we were given, as a Pillow image."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, Tensor):
        return to_pil(image)
    if isinstance(image, np.ndarray):
        return _ndarray_to_pil(image)
    raise UserInputError(
        f"An image must be a tensor, a numpy array or a PIL image, not {type(image).__name__}."
    )


def _save(im: Image.Image, target: Path, fmt: str, params: dict[str, Any]) -> None:
    """Save `im` atomically, turning write failures into one-sentence errors."""
    try:
        with atomic_path(target) as tmp:
            im.save(tmp, format=fmt, **params)
    except UserInputError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise UserInputError(f"Cannot write {target} ({_reason(exc)}).") from exc


def save_png(
    image: Tensor | Image.Image | NDArray[np.generic],
    path: str | Path,
    *,
    text: Mapping[str, str] | None = None,
) -> Path:
    """Write an image as PNG, atomically, whatever the suffix; return the path. `text` goes
    into the file as PNG text chunks (key → value), in sorted key order, so the same image
    and text give the same bytes."""
    target = Path(path)
    _save(_as_pil(image), target, "PNG", _png_params(text))
    return target


def _png_params(text: Mapping[str, str] | None) -> dict[str, Any]:
    """Pillow's PNG options for `text` chunks, in sorted key order."""
    if not text:
        return {}
    info = PngInfo()
    for key in sorted(text):
        info.add_itxt(key, text[key])
    return {"pnginfo": info}


def png_bytes(
    image: Tensor | Image.Image | NDArray[np.generic], *, text: Mapping[str, str] | None = None
) -> bytes:
    """An image encoded as PNG in memory, with `text` chunks as `save_png` writes them."""
    buf = io.BytesIO()
    _as_pil(image).save(buf, format="PNG", **_png_params(text))
    return buf.getvalue()


def png_text(path: str | Path) -> dict[str, str]:
    """The text chunks of a PNG file ({} when it has none), or a one-sentence error for a
    file that is not a readable PNG."""
    p = Path(path)
    if not p.is_file():
        raise UserInputError(f"{p} does not exist or is not a file.")
    try:
        with Image.open(p) as im:
            if im.format != "PNG":
                raise UserInputError(f"{p} is not a PNG file.")
            im.load()
            return {str(k): str(v) for k, v in getattr(im, "text", {}).items()}
    except (OSError, UnidentifiedImageError) as exc:
        raise UserInputError(f"Cannot read {p} as a PNG ({_reason(exc)}).") from exc


def save_pngs(
    images: Sequence[tuple[str | Path, Tensor | Image.Image | NDArray[np.generic]]],
) -> None:
    """Write several PNGs so that all of them appear or none (see `atomic_paths`)."""
    with atomic_paths([p for p, _ in images]) as tmps:
        for tmp, (target, image) in zip(tmps, images, strict=True):
            try:
                _as_pil(image).save(tmp, format="PNG")
            except (OSError, KeyError, ValueError) as exc:
                raise UserInputError(f"Cannot write {target} ({_reason(exc)}).") from exc


def save_image(
    image: Tensor | Image.Image | NDArray[np.generic], path: str | Path, *, quality: int = 95
) -> Path:
    """Write an image atomically in the format its suffix names (.png, .jpg/.jpeg, .webp)."""
    target = Path(path)
    fmt = _SAVE_FORMATS.get(target.suffix.lower())
    if fmt is None:
        raise UserInputError(
            f"Cannot tell which image format to write for {target}; "
            "use a .png, .jpg, .jpeg or .webp suffix."
        )
    if not 1 <= quality <= 100:
        raise UserInputError(f"quality must be between 1 and 100, got {quality}.")
    im = _as_pil(image)
    params: dict[str, int] = {}
    if fmt == "JPEG":
        if im.mode not in ("L", "RGB"):
            im = to_pil(from_pil(im))  # drop alpha (over white) and odd modes
        params["quality"] = quality
    elif fmt == "WEBP":
        params["quality"] = quality
    _save(im, target, fmt, params)
    return target
