"""Image grids and title bars."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from convscope.errors import UserInputError
from convscope.render import default_tile, grid_size, image_grid, titled


def test_default_layout_and_size() -> None:
    grid = image_grid([torch.rand(3, 32, 32) for _ in range(5)])
    # ncol = ceil(sqrt(5)) = 3, two rows; tile = max(32, 64) = 64; pad 4
    assert grid.mode == "RGB"
    assert grid.size == (3 * 64 + 4 * 4, 2 * 64 + 3 * 4)
    assert grid.size == grid_size(5, ncol=3, tile=64, pad=4)


def test_ncol_and_pad() -> None:
    grid = image_grid([torch.rand(3, 10, 10)] * 4, ncol=4, tile=10, pad=0)
    assert grid.size == (40, 10)
    grid = image_grid([torch.rand(3, 10, 10)] * 2, ncol=9, tile=10, pad=1)
    assert grid.size == (2 * 10 + 3, 12)  # ncol never exceeds the image count


def test_batch_tensor_and_gray() -> None:
    batch = torch.rand(6, 1, 12, 12)
    keep = batch.clone()
    grid = image_grid(batch, ncol=3, tile=12, pad=2)
    assert grid.size == (3 * 12 + 4 * 2, 2 * 12 + 3 * 2)
    assert torch.equal(batch, keep)
    a = np.asarray(grid)
    assert np.array_equal(a[2:14, 2:14, 0], a[2:14, 2:14, 1])


def test_nearest_upsampling_keeps_pixels_crisp() -> None:
    digit = torch.zeros(1, 8, 8)
    digit[0, ::2, ::2] = 1.0  # checkerboard-ish
    grid = image_grid([digit], tile=64, pad=0)
    a = np.asarray(grid)[..., 0]
    expect = np.kron((digit[0].numpy() * 255).astype(np.uint8), np.ones((8, 8), np.uint8))
    assert np.array_equal(a, expect)


def test_mixed_sizes_keep_aspect() -> None:
    tall = torch.zeros(3, 100, 20)  # black
    wide = torch.zeros(3, 20, 100)
    grid = image_grid([tall, wide], tile=50, pad=0, background=(255, 0, 0))
    a = np.asarray(grid)
    # tall → 50×10 centred: columns 0..19 of tile 0 are background, centre is black
    assert tuple(a[25, 2]) == (255, 0, 0) and tuple(a[25, 25]) == (0, 0, 0)
    # wide → 10×50 centred in tile 1: top rows are background
    assert tuple(a[2, 75]) == (255, 0, 0) and tuple(a[25, 75]) == (0, 0, 0)


def test_large_images_shrink_to_default_tile() -> None:
    grid = image_grid([torch.rand(3, 600, 900)], pad=0)
    assert grid.size == (512, 512)
    assert default_tile([(600, 900)]) == 512
    assert default_tile([(8, 8)]) == 64
    assert default_tile([(100, 30), (20, 200)]) == 200


def test_labels() -> None:
    ims = [torch.ones(3, 16, 16)] * 3
    plain = image_grid(ims, ncol=3, tile=64, pad=4)
    grid = image_grid(ims, ncol=3, tile=64, pad=4, labels=["cat", "dog", "a" * 200])
    assert grid.width == plain.width and grid.height > plain.height
    lh = grid.height - plain.height
    assert grid.size == grid_size(3, ncol=3, tile=64, pad=4, label_height=lh)
    a = np.asarray(grid)
    label_rows = a[4 + 64 : 4 + 64 + lh]
    for c in range(3):
        x0 = 4 + c * 68
        assert (label_rows[:, x0 : x0 + 64] < 128).any()  # text drawn under every tile
    gaps = [label_rows[:, x : x + 4] for x in (0, 68, 136, 204)]
    assert all((g == 255).all() for g in gaps)  # long label cut to fit its tile
    fixed = image_grid(ims, ncol=3, tile=64, pad=4, labels=["a", "b", "c"], label_height=30)
    assert fixed.height == plain.height + 30


def test_dark_background_gets_light_text() -> None:
    grid = image_grid([torch.zeros(3, 8, 8)], tile=64, labels=["x"], background=(0, 0, 0))
    assert (np.asarray(grid)[68:] > 128).any()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"images": []}, "at least one"),
        ({"images": [torch.rand(2, 4, 4)]}, r"\(3, H, W\)"),
        ({"images": [torch.rand(3, 0, 4)]}, "shape"),
        ({"images": [torch.rand(1, 1, 3, 4, 4)]}, "shape"),
        ({"images": torch.rand(3, 4, 4)}, "list"),
        ({"images": [np.zeros((3, 4, 4))]}, "torch.Tensor"),
        ({"images": [torch.rand(3, 4, 4)], "ncol": 0}, "ncol"),
        ({"images": [torch.rand(3, 4, 4)], "tile": 0}, "tile"),
        ({"images": [torch.rand(3, 4, 4)], "pad": -1}, "pad"),
        ({"images": [torch.rand(3, 4, 4)], "background": (0, 0)}, "background"),
        ({"images": [torch.rand(3, 4, 4)], "background": (0, 0, 300)}, "background"),
        ({"images": [torch.rand(3, 4, 4)], "labels": ["a", "b"]}, "labels"),
        ({"images": [torch.rand(3, 4, 4)], "labels": ["a"], "label_height": -2}, "label_height"),
    ],
)
def test_errors(kwargs: dict[str, object], match: str) -> None:
    images = kwargs.pop("images")
    with pytest.raises(UserInputError, match=match) as ei:
        image_grid(images, **kwargs)
    msg = str(ei.value)
    assert msg.endswith((".", "?")) and "\n" not in msg


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 12),
    ncol=st.one_of(st.none(), st.integers(1, 15)),
    tile=st.integers(1, 20),
    pad=st.integers(0, 5),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
)
def test_grid_size_formula(n: int, ncol: int | None, tile: int, pad: int, h: int, w: int) -> None:
    grid = image_grid([torch.rand(3, h, w)] * n, ncol=ncol, tile=tile, pad=pad)
    cols = min(ncol or math.ceil(math.sqrt(n)), n)
    rows = math.ceil(n / cols)
    assert grid.size == (cols * tile + (cols + 1) * pad, rows * tile + (rows + 1) * pad)


def test_titled() -> None:
    base = Image.new("RGB", (200, 50), (0, 0, 255))
    out = titled(base, "Layer conv1 — channel 7")
    bar = out.height - base.height
    assert out.width == 200 and bar > 0
    a = np.asarray(out)
    assert (a[:bar] < 128).any()  # text drawn in the bar
    assert np.array_equal(a[bar:], np.asarray(base))
    assert np.asarray(base).shape == (50, 200, 3)  # input untouched
    long = titled(base, "x" * 500, height=20)
    assert long.size == (200, 70)
    gray = titled(Image.new("L", (30, 10)), "t")
    assert gray.mode == "RGB"
    with pytest.raises(UserInputError, match="PIL image"):
        titled(torch.zeros(3, 4, 4), "t")
    with pytest.raises(UserInputError, match="height"):
        titled(base, "t", height=-1)
