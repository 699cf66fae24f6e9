"""Heatmaps, overlays, signed gradients and saliency panels."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from convscope.errors import UserInputError
from convscope.render.heatmaps import (
    heatmap,
    heatmap_overlay,
    normalize_map,
    saliency_panel,
    signed_gradient_image,
)
from convscope.render.maps import colorize


def test_normalize_map_divides_by_the_max() -> None:
    m = torch.tensor([[0.0, 1.0], [2.0, 4.0]])
    assert torch.allclose(normalize_map(m), m / 4)
    assert torch.equal(normalize_map(torch.zeros(3, 3)), torch.zeros(3, 3))
    assert torch.equal(normalize_map(torch.tensor([[-1.0, 2.0]])), torch.tensor([[0.0, 1.0]]))
    spiky = torch.ones(20, 20)
    spiky[0, 0] = 100.0
    clipped = normalize_map(spiky, percentile=99.0)
    assert clipped.max() == 1.0 and clipped[5, 5] == 1.0  # the spike saturates, the rest shows
    with pytest.raises(UserInputError, match="percentile"):
        normalize_map(m, percentile=0)


def test_overlay_blends_image_and_colour_map() -> None:
    img = torch.rand(3, 6, 8)
    m = torch.rand(6, 8)
    heat = colorize(m / m.max(), "jet")
    out = heatmap_overlay(img, m, alpha=0.5)
    assert out.shape == (3, 6, 8) and out.min() >= 0 and out.max() <= 1
    assert torch.allclose(out, 0.5 * img + 0.5 * heat, atol=1e-6)
    assert torch.allclose(heatmap_overlay(img, m * 7.0), out, atol=1e-6)  # scale-free
    assert torch.allclose(heatmap_overlay(img, m, alpha=0.0), img)
    assert torch.allclose(heatmap_overlay(img, m, alpha=1.0), heat, atol=1e-6)
    assert torch.allclose(
        heatmap_overlay(img, m, cmap="gray", alpha=1.0)[0], m / m.max(), atol=1 / 255
    )


def test_weighted_overlay_keeps_unimportant_pixels() -> None:
    img = torch.rand(3, 4, 4)
    m = torch.zeros(4, 4)
    m[0, 0] = 1.0
    out = heatmap_overlay(img, m, alpha=0.8, weighted=True)
    assert torch.allclose(out[:, 1:, 1:], img[:, 1:, 1:])
    assert not torch.allclose(out[:, 0, 0], img[:, 0, 0])


def test_overlay_resizes_a_small_map_and_does_not_mutate() -> None:
    img = torch.rand(3, 16, 16)
    m = torch.rand(4, 4)
    img0, m0 = img.clone(), m.clone()
    assert heatmap_overlay(img, m).shape == (3, 16, 16)
    assert torch.equal(img, img0) and torch.equal(m, m0)


@pytest.mark.parametrize(
    ("image", "values", "alpha", "match"),
    [
        (torch.rand(1, 4, 4), torch.rand(4, 4), 0.5, r"\(3, H, W\)"),
        (torch.rand(3, 4, 4), torch.rand(1, 4, 4), 0.5, r"\(H, W\)"),
        (torch.rand(3, 4, 4), torch.rand(4, 4), 1.5, "alpha"),
    ],
)
def test_overlay_rejects_bad_input(
    image: torch.Tensor, values: torch.Tensor, alpha: float, match: str
) -> None:
    with pytest.raises(UserInputError, match=match):
        heatmap_overlay(image, values, alpha=alpha)


def test_unknown_colour_map() -> None:
    with pytest.raises(UserInputError, match="colour map"):
        heatmap(torch.rand(4, 4), cmap="nope")


def test_signed_gradient_image() -> None:
    g = torch.zeros(3, 4, 4)
    assert torch.equal(signed_gradient_image(g), torch.full((3, 4, 4), 0.5))
    g[0, 0, 0], g[1, 1, 1] = 2.0, -2.0
    out = signed_gradient_image(g, percentile=100)
    assert out[0, 0, 0] == 1.0 and out[1, 1, 1] == 0.0 and out[2, 2, 2] == 0.5
    assert torch.allclose(signed_gradient_image(-g, percentile=100), 1 - out)
    r = torch.randn(3, 8, 8)
    s = signed_gradient_image(r)
    assert s.min() >= 0 and s.max() <= 1
    with pytest.raises(UserInputError):
        signed_gradient_image(torch.zeros(4, 4))


def test_saliency_panel_layout() -> None:
    img = torch.rand(3, 32, 32)
    maps = {"gradient": torch.rand(32, 32), "gradcam": torch.rand(8, 8)}
    one = saliency_panel(img, {"gradient": maps["gradient"]}, title="t")
    two = saliency_panel(img, maps, title="a title", signed=torch.randn(3, 32, 32))
    assert isinstance(two, Image.Image) and two.mode == "RGB"
    assert two.width > one.width and two.height == one.height  # one column per method
    assert two.height > two.width / 3 * 2  # two rows: maps, then overlays
    with pytest.raises(UserInputError, match="at least one map"):
        saliency_panel(img, {}, title="t")
    with pytest.raises(UserInputError, match="the gradcam map"):
        saliency_panel(img, {"gradcam": torch.rand(1, 8, 8)}, title="t")
