"""GrabCut seeded by a saliency map: masks, cut-outs, thresholds and degenerate seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from convscope.attribute.segment import (
    check_quantiles,
    cutout_rgba,
    grabcut_segment,
    seed_labels,
)
from convscope.errors import UserInputError

H = W = 64


def _grid() -> tuple[Tensor, Tensor]:
    return torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")


@pytest.fixture
def scene() -> tuple[Tensor, Tensor, Tensor]:
    """A red disk on a striped, noisy green/blue background, and a saliency blob over the disk
    (off-centre, wider than the disk, noisy): (image, saliency, disk mask)."""
    g = torch.Generator().manual_seed(0)
    yy, xx = _grid()
    disk = ((yy - 30) ** 2 + (xx - 34) ** 2) <= 14**2
    stripes = 0.5 + 0.3 * torch.sin(xx / 2.0 + yy / 5.0)
    image = torch.stack([0.15 * stripes, stripes, 1.0 - 0.6 * stripes])
    image = (image + 0.08 * torch.rand(3, H, W, generator=g)).clamp(0, 1)
    image[:, disk] = torch.tensor([0.9, 0.15, 0.1]).view(3, 1)
    blob = torch.exp(-((yy - 27.0) ** 2 + (xx - 37.0) ** 2) / (2 * 10.0**2))
    saliency = blob + 0.1 * torch.rand(H, W, generator=g)
    return image, saliency, disk


def iou(a: Tensor, b: Tensor) -> float:
    return float((a & b).sum()) / float((a | b).sum())


def test_grabcut_recovers_the_disk(scene: tuple[Tensor, Tensor, Tensor]) -> None:
    image, saliency, disk = scene
    before = (image.clone(), saliency.clone())
    mask = grabcut_segment(image, saliency)
    assert mask.dtype == torch.bool and mask.shape == (H, W)
    assert iou(mask, disk) >= 0.8
    # The seeds alone (the top 30 % of the blob) are a much worse mask than GrabCut's.
    seeds = seed_labels(saliency)
    assert iou((seeds == 1) | (seeds == 3), disk) < iou(mask, disk)
    assert torch.equal(image, before[0]) and torch.equal(saliency, before[1])


def test_grabcut_is_repeatable_and_takes_a_map_of_another_size(
    scene: tuple[Tensor, Tensor, Tensor],
) -> None:
    image, saliency, disk = scene
    a = grabcut_segment(image, saliency)
    assert torch.equal(a, grabcut_segment(image, saliency))
    coarse = torch.nn.functional.avg_pool2d(saliency[None, None], 4)[0, 0]  # (16, 16)
    assert iou(grabcut_segment(image, coarse), disk) >= 0.8


def test_cutout_alpha(scene: tuple[Tensor, Tensor, Tensor]) -> None:
    image, _, disk = scene
    cut = cutout_rgba(image, disk)
    assert cut.mode == "RGBA" and cut.size == (W, H)
    rgba = torch.from_numpy(np.array(cut)).permute(2, 0, 1)  # (4, H, W)
    assert torch.equal(rgba[3] == 255, disk)
    assert bool((rgba[3][~disk] == 0).all())
    expected = (image * 255).round().to(torch.uint8)
    assert torch.equal(rgba[:3][:, disk], expected[:, disk])
    with pytest.raises(UserInputError, match="size of the image"):
        cutout_rgba(image, disk[:10])


def test_seed_labels_follow_the_quantiles() -> None:
    s = torch.arange(100, dtype=torch.float32).view(10, 10)  # ranks 0..99
    labels = seed_labels(s)  # defaults 0.30 / 0.70 / 0.95
    counts = {k: int((labels == k).sum()) for k in range(4)}
    assert counts == {0: 30, 2: 40, 3: 25, 1: 5}
    labels = seed_labels(s, fg_quantile=0.5, probable_fg_quantile=0.5, bg_quantile=0.1)
    counts = {k: int((labels == k).sum()) for k in range(4)}
    assert counts == {0: 10, 2: 40, 3: 0, 1: 50}
    band = seed_labels(s, border=1)
    assert bool((band[0] == 0).all()) and bool((band[:, 0] == 0).all())
    assert int(band[-1, -1]) == 1  # sure foreground wins over the border band


def test_thresholds_are_overridable(scene: tuple[Tensor, Tensor, Tensor]) -> None:
    image, saliency, _ = scene
    # Only the very top as sure foreground, almost everything else sure background: the
    # mask shrinks towards the seeds.
    loose = grabcut_segment(image, saliency)
    tight = grabcut_segment(
        image, saliency, fg_quantile=0.99, probable_fg_quantile=0.99, bg_quantile=0.98
    )
    assert 0 < int(tight.sum()) < int(loose.sum())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bg_quantile": 0.96}, "bg-quantile"),
        ({"bg_quantile": 0.95}, "bg-quantile"),
        ({"probable_fg_quantile": 0.2}, "probable-fg-quantile"),
        ({"probable_fg_quantile": 0.97}, "probable-fg-quantile"),
        ({"fg_quantile": 1.0}, "fg-quantile"),
        ({"fg_quantile": float("nan")}, "fg-quantile"),
        ({"bg_quantile": -0.1}, "bg-quantile"),
        ({"iterations": 0}, "iterations"),
        ({"border": 40}, "border"),
    ],
)
def test_bad_options_are_one_sentence_errors(
    scene: tuple[Tensor, Tensor, Tensor], kwargs: dict[str, float], message: str
) -> None:
    image, saliency, _ = scene
    with pytest.raises(UserInputError, match=message) as info:
        grabcut_segment(image, saliency, **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_degenerate_seeds_are_one_sentence_errors(scene: tuple[Tensor, Tensor, Tensor]) -> None:
    image, _, _ = scene
    for bad, message in [
        (torch.zeros(H, W), "constant"),
        (torch.full((H, W), 3.0), "constant"),
        (torch.full((H, W), float("nan")), "NaN"),
        (torch.zeros(3, H, W), "shape"),
    ]:
        with pytest.raises(UserInputError, match=message) as info:
            grabcut_segment(image, bad)
        assert "\n" not in str(info.value)
    # A saturated map (all at its maximum but three pixels): nothing is more salient than the
    # background threshold, so there is no foreground to seed.
    saturated = torch.ones(H, W)
    saturated[0, :3] = 0.0
    with pytest.raises(UserInputError, match="no pixels above") as info:
        grabcut_segment(image, saturated)
    assert "\n" not in str(info.value)
    with pytest.raises(UserInputError, match="shape"):
        grabcut_segment(torch.rand(4, H, W), torch.rand(H, W))


def test_check_quantiles_accepts_the_edges() -> None:
    check_quantiles(0.9, 0.9, 0.0)
    with pytest.raises(UserInputError):
        check_quantiles(0.5, 0.5, 0.5)
