"""Activation maps: channel lists, capture, grids that state their scaling, overlays."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from convscope.errors import UnknownNameError, UserInputError
from convscope.inspect import (
    activation_grid,
    activation_maps,
    activation_overlay,
    channel_spec,
    parse_channels,
    scaling_caption,
    strongest_channels,
)
from convscope.models import ConvModel, load_model
from convscope.render import grid_size
from convscope.render.maps import colorize

# ---- parse_channels ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "n", "expected"),
    [
        ("all", 4, [0, 1, 2, 3]),
        ("ALL", 2, [0, 1]),
        ("0-3", 10, [0, 1, 2, 3]),
        ("3,5,9-12", 20, [3, 5, 9, 10, 11, 12]),
        (" 7 , 1 - 2 ", 8, [7, 1, 2]),
        ("4,4,3-5", 6, [4, 3, 5]),  # repeats dropped, first stays
        ("511", 512, [511]),
        ("2-2", 3, [2]),
    ],
)
def test_parse_channels(spec: str, n: int, expected: list[int]) -> None:
    assert parse_channels(spec, n) == expected


def test_parse_channels_out_of_range_names_the_layer() -> None:
    with pytest.raises(UserInputError) as info:
        parse_channels("600", 512, layer="relu5_3")
    assert str(info.value) == "channel 600 is out of range 0..511 for layer relu5_3."
    with pytest.raises(UserInputError, match=r"^channel 12 is out of range 0\.\.9\.$"):
        parse_channels("3-12", 10)


@pytest.mark.parametrize("spec", ["", " ", "x", "1-", "-3", "1,,2", "1.5", "3-1", "1-2-3", "a-b"])
def test_parse_channels_malformed(spec: str) -> None:
    with pytest.raises(UserInputError) as info:
        parse_channels(spec, 16)
    msg = str(info.value)
    assert msg.endswith(".") and "\n" not in msg


def test_parse_channels_needs_channels() -> None:
    with pytest.raises(UserInputError, match="no channels"):
        parse_channels("all", 0, layer="gap")


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_channel_spec_round_trip(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 300))
    chosen = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=40, unique=True))
    spec = channel_spec(chosen)
    assert parse_channels(spec, n) == chosen
    ordered = sorted(chosen)
    assert parse_channels(channel_spec(ordered), n) == ordered
    assert len(channel_spec(ordered)) <= len(",".join(map(str, ordered)))


def test_channel_spec_is_compact() -> None:
    assert channel_spec([0, 1, 2, 3, 7, 9, 10]) == "0-3,7,9-10"
    assert channel_spec([]) == ""


# ---- activation_maps --------------------------------------------------------------------------


def test_activation_maps_on_tiny(tiny: ConvModel) -> None:
    image = torch.zeros(3, 8, 8)
    image[0], image[1], image[2] = 0.5, 0.25, 0.75
    act = activation_maps(tiny, image, "act")  # relu2: (r + g, b) at half resolution
    assert act.shape == (2, 4, 4) and act.device.type == "cpu"
    assert act[0, 1:3, 1:3] == pytest.approx(torch.full((2, 2), 0.75))
    assert act[1, 1:3, 1:3] == pytest.approx(torch.full((2, 2), 0.75))
    assert activation_maps(tiny.module, image, "conv1").shape == (4, 8, 8)
    assert activation_maps(tiny, image[None], "pool1").shape == (4, 4, 4)


def test_activation_maps_errors(tiny: ConvModel) -> None:
    image = torch.rand(3, 8, 8)
    with pytest.raises(UserInputError, match="pick a convolutional layer"):
        activation_maps(tiny, image, "fc")
    with pytest.raises(UnknownNameError):
        activation_maps(tiny, image, "conv9")
    with pytest.raises(UserInputError, match="one image"):
        activation_maps(tiny, torch.rand(2, 3, 8, 8), "conv1")
    with pytest.raises(UserInputError):
        activation_maps(tiny, torch.rand(8, 8), "conv1")


def test_strongest_channels() -> None:
    act = torch.stack([torch.full((3, 3), v) for v in (1.0, 5.0, 3.0, 5.0)])
    assert strongest_channels(act) == [1]
    assert strongest_channels(act, 3) == [1, 3, 2]  # ties keep channel order
    assert strongest_channels(act, 2, channels=[0, 2]) == [2, 0]
    with pytest.raises(UserInputError):
        strongest_channels(act, 0)
    with pytest.raises(UserInputError, match="out of range"):
        strongest_channels(act, 1, channels=[4])


# ---- activation_grid --------------------------------------------------------------------------


def _two_channels() -> torch.Tensor:
    pattern = torch.arange(16.0).view(4, 4)
    return torch.stack([pattern, 10 * pattern])  # same pattern, ten times stronger


def test_scaling_is_written_in_the_caption() -> None:
    act = _two_channels()
    assert scaling_caption(act, scaling="channel").startswith("per-channel scaling")
    assert scaling_caption(act, scaling="shared") == "shared scaling: min..max = 0..150"
    assert scaling_caption(act, [0], "shared") == "shared scaling: min..max = 0..15"
    assert scaling_caption(act * 1e-5, scaling="shared").endswith("0..0.0015")
    with pytest.raises(UserInputError):
        scaling_caption(act, scaling="log")  # type: ignore[arg-type]


def _tiles(image: np.ndarray, n: int, *, tile: int, top: int) -> list[np.ndarray]:
    """The `n` tiles of a one-row activation grid (pad 4)."""
    width = grid_size(n, ncol=n, tile=tile, pad=4)[0]
    left = (image.shape[1] - width) // 2  # narrow grids are centred under the captions
    xs = [left + 4 + k * (tile + 4) for k in range(n)]
    return [image[top + 4 : top + 4 + tile, x : x + tile] for x in xs]


def test_scaling_changes_what_you_see() -> None:
    act = _two_channels()
    tile = 112  # 4×4 maps grow 28×
    per = np.asarray(activation_grid(act, ncol=2))
    shared = np.asarray(activation_grid(act, ncol=2, scaling="shared"))
    width, height = grid_size(2, ncol=2, tile=tile, pad=4, label_height=20)  # 14 px labels
    assert per.shape == (height + 22, max(width, 360), 3)  # one caption bar
    a, b = _tiles(per, 2, tile=tile, top=22)
    assert np.array_equal(a, b)  # per-channel: both maps look the same
    a, b = _tiles(shared, 2, tile=tile, top=22)
    assert a.max() < 30 and b.max() == 255  # shared: the weak one is nearly black


def test_activation_grid_title_channels_and_errors() -> None:
    act = torch.rand(10, 6, 6)
    plain = activation_grid(act, channels=[1, 5, 7])
    titled_grid = activation_grid(act, channels=[1, 5, 7], title="relu3_3")
    assert titled_grid.height == plain.height + 28
    assert activation_grid(act, channels=[0], tile=30).height < plain.height
    with pytest.raises(UserInputError, match="out of range"):
        activation_grid(act, channels=[10])
    with pytest.raises(UserInputError):
        activation_grid(act, scaling="sideways")  # type: ignore[arg-type]
    with pytest.raises(UserInputError):
        activation_grid(torch.rand(6, 6))


# ---- activation_overlay -----------------------------------------------------------------------


def test_overlay_shape_range_and_blend() -> None:
    image = torch.rand(3, 16, 12)
    act = torch.rand(4, 3) * 50 - 10
    out = activation_overlay(image, act)
    assert out.shape == (3, 16, 12)
    assert out.min() >= 0 and out.max() <= 1
    assert torch.allclose(activation_overlay(image, act, alpha=0.0), image)
    heat = activation_overlay(image, act, alpha=1.0)
    assert torch.allclose(heat, activation_overlay(torch.rand(3, 16, 12), act, alpha=1.0))
    assert torch.allclose(out, 0.5 * image + 0.5 * heat, atol=1e-6)
    flat = activation_overlay(image, torch.full((4, 3), 7.0), alpha=1.0, cmap="gray")
    assert torch.allclose(flat, colorize(torch.zeros(16, 12), "gray"))  # a constant map is 0


def test_overlay_upsamples_where_the_activation_is() -> None:
    act = torch.zeros(4, 4)
    act[0, 3] = 1.0  # top-right
    heat = activation_overlay(torch.zeros(3, 32, 32), act, alpha=1.0, cmap="gray")[0]
    assert heat[:8, 24:].mean() > 0.4 and heat[24:, :8].max() == 0


@pytest.mark.parametrize(
    ("image", "act", "alpha"),
    [
        (torch.rand(1, 8, 8), torch.rand(2, 2), 0.5),
        (torch.rand(3, 8, 8), torch.rand(1, 2, 2), 0.5),
        (torch.rand(3, 8, 8), torch.rand(2, 2), 1.5),
    ],
)
def test_overlay_errors(image: torch.Tensor, act: torch.Tensor, alpha: float) -> None:
    with pytest.raises(UserInputError):
        activation_overlay(image, act, alpha=alpha)


# ---- real weights -----------------------------------------------------------------------------


@pytest.mark.weights
def test_vgg16_relu5_3_on_the_cat() -> None:
    from convscope.data import load_sample

    vgg = load_model("vgg16")
    small = replace(vgg, preprocess=replace(vgg.preprocess, resize=64, crop=64))  # fast
    act = activation_maps(small, load_sample("cat"), "relu5_3")
    assert act.shape == (512, 4, 4) and act.min() >= 0
    with pytest.raises(UserInputError, match=r"out of range 0\.\.511 for layer relu5_3\."):
        parse_channels("0-600", act.shape[0], layer="relu5_3")
    grid = activation_grid(act, channels=parse_channels("0-15", 512), ncol=4)
    width, height = grid_size(16, ncol=4, tile=112, pad=4, label_height=20)  # 28× enlarged
    assert grid.size == (width, height + 22)
