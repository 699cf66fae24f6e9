"""Filter pictures: per-filter normalization, RGB / sliced / depthwise tiles, grids, comparison."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from convscope.errors import UnknownNameError, UserInputError
from convscope.inspect import (
    compare_first_layers,
    conv_layer,
    filter_grid,
    filter_tiles,
    first_conv,
)
from convscope.models import ConvModel, Preprocess, WeightSource, load_model
from convscope.render import grid_size

TITLE_BARS = 22 + 28  # subtitle + title


def _model(module: nn.Module, name: str = "toy") -> ConvModel:
    return ConvModel(
        name=name, module=module, preprocess=Preprocess(), source=WeightSource("random")
    )


def _count(image: Image.Image, color: tuple[int, int, int]) -> int:
    a = np.asarray(image.convert("RGB"))
    return int((a == np.array(color, dtype=np.uint8)).all(axis=2).sum())


# ---- filter_tiles -----------------------------------------------------------------------------


def test_rgb_tiles_are_scaled_per_filter() -> None:
    w = torch.zeros(3, 3, 3, 3)
    w[0] = 1.0
    w[0, 0, 0, 0] = -2.0  # min of filter 0
    w[0, 2, 2, 2] = 5.0  # max of filter 0
    w[1] = 0.7  # constant filter
    w[2] = torch.arange(27.0).view(3, 3, 3) * 100  # a much larger filter
    keep = w.clone()
    tiles = filter_tiles(w)
    assert tiles.shape == (3, 1, 3, 3, 3)  # (filters, tiles per filter, RGB, kh, kw)
    assert torch.equal(w, keep)
    f0 = tiles[0, 0]
    assert f0[0, 0, 0] == 0.0 and f0[2, 2, 2] == 1.0
    assert f0[1, 1, 1] == pytest.approx(3 / 7)  # (1 - -2) / (5 - -2)
    assert torch.all(tiles[1] == 0.5)
    assert tiles[2].min() == 0.0 and tiles[2].max() == 1.0  # its own scale, not filter 0's
    assert tiles[2, 0].flatten()[13] == pytest.approx(13 / 26)


def test_higher_layer_slices_share_their_filters_scaling() -> None:
    w = torch.zeros(4, 5, 3, 3)
    w[0, 1] = 2.0  # filter 0: one strong input, the others zero
    w[0, 3, 0, 0] = -2.0
    w[1] = torch.randn(5, 3, 3)
    tiles = filter_tiles(w)
    assert tiles.shape == (4, 5, 1, 3, 3)  # one row per filter, one slice per input
    assert torch.all(tiles[0, 1] == 1.0)
    assert torch.all(tiles[0, 0] == 0.5)  # zero on a -2..2 filter scale
    assert tiles[0, 3, 0, 0, 0] == 0.0
    assert tiles[1].min() == 0.0 and tiles[1].max() == 1.0
    assert torch.all(tiles[2] == 0.5)  # an all-zero filter is mid-gray
    # max_inputs picks slices but keeps the whole filter's scaling.
    few = filter_tiles(w, max_inputs=2, max_filters=3)
    assert few.shape == (3, 2, 1, 3, 3)
    assert torch.equal(few, tiles[:3, :2])


def test_depthwise_and_limits() -> None:
    w = torch.randn(6, 1, 5, 5)
    tiles = filter_tiles(w)
    assert tiles.shape == (6, 1, 1, 5, 5)  # one grayscale tile per filter
    for t in tiles:
        assert t.min() == 0.0 and t.max() == 1.0
    assert filter_tiles(w, max_filters=2).shape == (2, 1, 1, 5, 5)
    assert filter_tiles(w, max_filters=99).shape == (6, 1, 1, 5, 5)
    # A 3-input conv can be drawn as slices when it is not a first layer.
    assert filter_tiles(torch.randn(2, 3, 3, 3), rgb=False).shape == (2, 3, 1, 3, 3)


@pytest.mark.parametrize(
    ("weight", "kwargs"),
    [
        (torch.randn(4, 3, 3, 3), {"max_filters": 0}),
        (torch.randn(4, 3, 3, 3), {"max_inputs": -1}),
        (torch.randn(4, 4, 3, 3), {"rgb": True}),
        (torch.randn(4, 3, 3), {}),
        (torch.randn(0, 3, 3, 3), {}),
    ],
)
def test_filter_tiles_errors(weight: torch.Tensor, kwargs: dict[str, object]) -> None:
    with pytest.raises(UserInputError):
        filter_tiles(weight, **kwargs)  # type: ignore[arg-type]


# ---- layers -----------------------------------------------------------------------------------


def test_first_conv_and_conv_layer(tiny: ConvModel) -> None:
    assert first_conv(tiny) == "conv1"
    assert first_conv(tiny.module) == "conv1"
    assert conv_layer(tiny, "features")[0] == "conv2"  # an alias
    with pytest.raises(UserInputError, match="no Conv2d"):
        first_conv(nn.Sequential(nn.ReLU()))
    with pytest.raises(UserInputError, match="ReLU"):
        conv_layer(tiny, "relu1")
    with pytest.raises(UnknownNameError):
        conv_layer(tiny, "conv9")


# ---- grids ------------------------------------------------------------------------------------


def test_tiny_first_layer_grid_is_crisp(tiny: ConvModel) -> None:
    grid = filter_grid(tiny)
    tile = 57  # a whole multiple of 3 near 56: every weight is a 19×19 square
    label = 16
    body = grid_size(4, ncol=2, tile=tile, pad=4, label_height=label)
    assert grid.height == body[1] + TITLE_BARS
    assert grid.width >= body[0]
    # The box filters on red, green, blue and minus red: pure red, green, blue and cyan tiles.
    for color in [(255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 255, 255)]:
        assert _count(grid, color) == tile * tile


def test_tiny_higher_layer_slices(tiny: ConvModel) -> None:
    grid = filter_grid(tiny, "conv2")  # (2, 4, 1, 1): rows of 4 slices
    # filter 0 = [1, 1, 0, 0] and filter 1 = [0, 0, 1, 1]: two white slices per row
    assert _count(grid, (255, 255, 255)) == 4 * 56 * 56
    few = filter_grid(tiny, "conv2", max_inputs=2)  # inputs 0 and 1: white only in row 0
    assert _count(few, (255, 255, 255)) == 2 * 56 * 56


def test_depthwise_grid_and_errors() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 5, groups=8))
    cm = _model(net)
    grid = filter_grid(cm, "2")
    body = grid_size(8, ncol=3, tile=55, pad=4, label_height=16)
    assert grid.height == body[1] + TITLE_BARS
    assert filter_grid(cm, "2", max_filters=3).height < grid.height
    with pytest.raises(UserInputError, match="ReLU"):
        filter_grid(cm, "1")
    with pytest.raises(UserInputError, match="max_filters"):
        filter_grid(cm, max_filters=0)


def test_too_many_tiles_is_refused() -> None:
    cm = _model(nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 200, 1), nn.Conv2d(200, 200, 1)))
    with pytest.raises(UserInputError, match="tiles"):
        filter_grid(cm, "2", max_filters=200, max_inputs=200)
    assert filter_grid(cm, "2").size[0] > 0  # the defaults stay within the limit


def test_compare_first_layers_side_by_side(tiny: ConvModel) -> None:
    other = _model(nn.Sequential(nn.Conv2d(3, 6, 5), nn.ReLU()), name="five")
    both = compare_first_layers([tiny, other], gap=10)
    a, b = filter_grid(tiny), filter_grid(other)
    assert both.size == (a.width + b.width + 10, max(a.height, b.height))
    assert _count(both, (255, 0, 0)) == 57 * 57  # the tiny panel is in there, unchanged
    with pytest.raises(UserInputError):
        compare_first_layers([])


# ---- real weights -----------------------------------------------------------------------------


@pytest.mark.weights
def test_vgg16_conv1_1_grid() -> None:
    vgg = load_model("vgg16")
    assert first_conv(vgg) == "features.0"
    tiles = filter_tiles(conv_layer(vgg, "conv1_1")[1].weight)
    assert tiles.shape == (64, 1, 3, 3, 3)
    assert torch.all(tiles.amin(dim=(1, 2, 3, 4)) == 0)
    assert torch.all(tiles.amax(dim=(1, 2, 3, 4)) == 1)
    grid = filter_grid(vgg, "conv1_1")
    body = grid_size(64, ncol=8, tile=57, pad=4, label_height=16)
    assert grid.height == body[1] + TITLE_BARS
    assert grid.width == body[0]


@pytest.mark.weights
def test_efficientnet_stem_and_depthwise() -> None:
    eff = load_model("efficientnet_lite0")
    assert first_conv(eff) == "_conv_stem"
    grid = filter_grid(eff, "_blocks.3._depthwise_conv", max_filters=16)  # 5×5 depthwise
    assert grid.height == grid_size(16, ncol=4, tile=55, pad=4, label_height=16)[1] + TITLE_BARS
