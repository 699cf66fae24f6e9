"""Sample images that ship inside installed packages: usable offline, with no download."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from convscope.data.images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, load_image
from convscope.errors import UnknownNameError, UserInputError, closest

__all__ = [
    "SAMPLES",
    "SampleInfo",
    "is_sample",
    "load_image_or_sample",
    "load_sample",
    "sample_info",
    "sample_names",
]


class SampleInfo(NamedTuple):
    """How to load a sample image, where it comes from, and its licence."""

    loader: Callable[[], NDArray[Any]]
    source: str
    licence: str


def _skimage(name: str) -> Callable[[], NDArray[Any]]:
    """A loader for `skimage.data.<name>()`, imported only when called."""

    def load() -> NDArray[Any]:
        import skimage.data

        out = getattr(skimage.data, name)()
        return np.asarray(out[0] if isinstance(out, tuple) else out)

    return load


def _package_file(package: str, *parts: str) -> Path | None:
    """A data file inside an installed package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root, *parts)
        if path.is_file():
            return path
    return None


def _read_rgb(path: Path) -> NDArray[Any]:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _sklearn(filename: str) -> Callable[[], NDArray[Any]]:
    """A loader for `sklearn.datasets.load_sample_image(filename)`."""

    def load() -> NDArray[Any]:
        path = _package_file("sklearn", "datasets", "images", filename)
        if path is not None:  # importing sklearn takes seconds; the file is all we need
            return _read_rgb(path)
        from sklearn.datasets import load_sample_image

        return np.asarray(load_sample_image(filename))

    return load


def _hopper() -> NDArray[Any]:
    """matplotlib's bundled photograph of Grace Hopper."""
    path = _package_file("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg")
    if path is None:
        from matplotlib import cbook

        path = Path(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    return _read_rgb(path)


_SKIMAGE = "scikit-image (skimage.data.{})"
_CC0 = "CC0"
_PD = "public domain"
_NO_KNOWN = "no known copyright restrictions"
_UNSTATED = "not stated by scikit-image (BSD-3-Clause package)"

SAMPLES: dict[str, SampleInfo] = {
    "cat": SampleInfo(_skimage("chelsea"), _SKIMAGE.format("chelsea"), _CC0),
    "chelsea": SampleInfo(_skimage("chelsea"), _SKIMAGE.format("chelsea"), _CC0),
    "coffee": SampleInfo(_skimage("coffee"), _SKIMAGE.format("coffee"), _CC0),
    "rocket": SampleInfo(_skimage("rocket"), _SKIMAGE.format("rocket") + ", SpaceX", _PD),
    "astronaut": SampleInfo(_skimage("astronaut"), _SKIMAGE.format("astronaut") + ", NASA", _PD),
    "china": SampleInfo(
        _sklearn("china.jpg"), "scikit-learn (load_sample_image('china.jpg'))", "CC BY 2.0"
    ),
    "flower": SampleInfo(
        _sklearn("flower.jpg"), "scikit-learn (load_sample_image('flower.jpg'))", "CC BY 2.0"
    ),
    "hopper": SampleInfo(
        _hopper, "matplotlib (cbook.get_sample_data('grace_hopper.jpg')), US Navy", _PD
    ),
    "camera": SampleInfo(_skimage("camera"), _SKIMAGE.format("camera"), _CC0),
    "coins": SampleInfo(
        _skimage("coins"), _SKIMAGE.format("coins") + ", Brooklyn Museum", _NO_KNOWN
    ),
    "hubble": SampleInfo(
        _skimage("hubble_deep_field"), _SKIMAGE.format("hubble_deep_field") + ", NASA", _PD
    ),
    "immunohistochemistry": SampleInfo(
        _skimage("immunohistochemistry"), _SKIMAGE.format("immunohistochemistry"), _NO_KNOWN
    ),
    "retina": SampleInfo(_skimage("retina"), _SKIMAGE.format("retina") + ", Wikimedia", _CC0),
    "brick": SampleInfo(_skimage("brick"), _SKIMAGE.format("brick"), _CC0),
    "grass": SampleInfo(_skimage("grass"), _SKIMAGE.format("grass"), _CC0),
    "gravel": SampleInfo(_skimage("gravel"), _SKIMAGE.format("gravel"), _CC0),
    "colorwheel": SampleInfo(_skimage("colorwheel"), _SKIMAGE.format("colorwheel"), _UNSTATED),
    "horse": SampleInfo(_skimage("horse"), _SKIMAGE.format("horse") + ", openclipart", _CC0),
    "moon": SampleInfo(_skimage("moon"), _SKIMAGE.format("moon"), _UNSTATED),
    "clock": SampleInfo(_skimage("clock"), _SKIMAGE.format("clock"), _PD),
    "motorcycle": SampleInfo(
        _skimage("stereo_motorcycle"),
        _SKIMAGE.format("stereo_motorcycle") + ", left image, Middlebury 2014 stereo",
        _UNSTATED,
    ),
}
"""Sample name → how to load it, its source and licence."""


def sample_names() -> list[str]:
    """The names of all sample images, sorted."""
    return sorted(SAMPLES)


def _key(name: str) -> str:
    return name.strip().lower()


def is_sample(name: str) -> bool:
    """Whether `name` (case-insensitive) names a sample image."""
    return isinstance(name, str) and _key(name) in SAMPLES


def sample_info(name: str) -> SampleInfo:
    """The loader, source and licence of sample `name`."""
    key = _key(name)
    if key not in SAMPLES:
        raise UnknownNameError("sample", name, sample_names())
    return SAMPLES[key]


def _to_chw(a: NDArray[Any], name: str) -> Tensor:
    """A packaged array (gray, bool, RGB or RGBA; uint8, bool or float) → (3, H, W) floats."""
    if a.dtype == np.bool_:
        f = a.astype(np.float32)
    elif np.issubdtype(a.dtype, np.integer):
        f = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
    else:
        f = np.clip(a.astype(np.float32), 0.0, 1.0)
    if f.ndim == 2:
        f = np.broadcast_to(f[None], (3, *f.shape))  # (3, H, W)
    elif f.ndim == 3 and f.shape[2] == 4:
        alpha = f[..., 3:]
        f = (f[..., :3] * alpha + (1.0 - alpha)).transpose(2, 0, 1)  # over white
    elif f.ndim == 3 and f.shape[2] == 3:
        f = f.transpose(2, 0, 1)  # (3, H, W)
    else:  # pragma: no cover - only if a package changes its data
        raise UserInputError(f"Sample {name!r} has an unexpected shape {a.shape}.")
    return torch.from_numpy(np.ascontiguousarray(f, dtype=np.float32))


def load_sample(name: str) -> Tensor:
    """Sample image `name` as a (3, H, W) float32 RGB tensor in [0, 1]."""
    info = sample_info(name)
    try:
        arr = info.loader()
    except (ImportError, OSError) as exc:
        raise UserInputError(
            f"Sample {name!r} cannot be loaded here ({type(exc).__name__}: {exc})."
        ) from exc
    return _to_chw(arr, name)


def _looks_like_path(spec: str | Path) -> bool:
    text = str(spec)
    return (
        isinstance(spec, Path)
        or "/" in text
        or (os.sep in text)
        or Path(text).suffix.lower() in IMAGE_SUFFIXES
    )


def load_image_or_sample(
    spec: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> tuple[Tensor, str]:
    """Load an image file, or else a sample by name; return the (3, H, W) image and its label.

    An existing path wins over a sample of the same name. The label is the path as given, or
    the sample's name.
    """
    path = Path(spec)
    if str(spec) and path.exists():
        return load_image(path, max_pixels=max_pixels), str(spec)
    if isinstance(spec, str) and is_sample(spec):
        return load_sample(spec), _key(spec)
    if _looks_like_path(spec):
        raise UserInputError(f"Image file {spec} does not exist.")
    near = closest(str(spec), sample_names(), n=3)
    tail = (
        "did you mean " + ", ".join(repr(n) for n in near) + "?"
        if near
        else f"samples are: {', '.join(sample_names())}."
    )
    raise UserInputError(f"{str(spec)!r} is neither a file nor a sample name; {tail}")
