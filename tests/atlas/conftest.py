"""Tiny atlases: the hand-weighted `tiny` model on a dozen small colour images in two
classes, at sizes that build in about a second."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from convscope.atlas import AtlasResult, build_atlas
from convscope.testing import tiny_model

LAYERS = ["relu1", "conv2"]  # 4 and 2 channels
SMALL: dict[str, Any] = dict(steps=4, size=16, diverse=2, k=3, neighbors=3)


def _make_images(root: Path, *, classes: bool = True, n: int = 12, side: int = 16) -> Path:
    """`n` random colour images, in the sub-folders a/ and b/ (two classes) or all in one."""
    g = torch.Generator().manual_seed(7)
    for i in range(n):
        folder = root / ("ab"[i % 2] if classes else "")
        folder.mkdir(parents=True, exist_ok=True)
        arr = (torch.rand(side, side, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(folder / f"im{i:02d}.png")
    return root


def _small_atlas(out: Path, images: Path, **options: Any) -> AtlasResult:
    return build_atlas(tiny_model(), images, LAYERS, out=out, **{**SMALL, **options})


class Kit:
    """What the atlas tests share (tests import no helper modules; fixtures hand them out)."""

    layers = LAYERS
    small = SMALL
    make_images = staticmethod(_make_images)
    small_atlas = staticmethod(_small_atlas)


@pytest.fixture(scope="session")
def kit() -> type[Kit]:
    return Kit


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_images(tmp_path_factory.mktemp("atlas-images") / "images")


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Path:
    """One atlas, built once for the tests that only read it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("atlas-built") / "atlas"
        _small_atlas(out, images)
    finally:
        torch.set_num_threads(threads)
    return out
