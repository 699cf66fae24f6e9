"""The guided-backprop image of one top patch: signed, scaled on its own, padding hatched."""

from __future__ import annotations

import torch

from convscope.inspect.patches import crop_patch, guided_crop


def test_one_outlier_does_not_turn_the_patch_flat_gray() -> None:
    g = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(0)) * 1e-3
    g[0, 5, 5] = 10.0  # one extreme pixel, as guided backprop often has
    tile = guided_crop(g, (0, 0, 32, 32))
    naive = g / g.abs().amax() * 0.5 + 0.5  # scaled by the maximum: almost all 0.5
    assert float(naive.std()) < 0.01
    assert float(tile.std()) > 0.1
    assert tile.min() >= 0 and tile.max() <= 1


def test_zero_is_mid_gray_and_the_padding_is_hatched() -> None:
    g = torch.zeros(3, 16, 16)
    tile = guided_crop(g, (-4, -4, 12, 12))  # a box that starts outside the image
    _, mask = crop_patch(g, (-4, -4, 12, 12))
    assert tile.shape == (3, 16, 16)
    assert torch.all(tile[:, mask] == 0.5)
    stripes = tile[:, ~mask].unique()
    assert torch.allclose(stripes, torch.tensor([0.65, 0.85]))  # the two grays of the hatch
