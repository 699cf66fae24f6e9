"""Parameterizations and transforms: spectrum scaling and its inverse, invertible colour
decorrelation, initialization from an image, the straight-through clamp, and transforms that
keep shapes and pass gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from convscope.errors import UserInputError
from convscope.models.base import Preprocess
from convscope.synthesize.params import (
    ColorDecorrelation,
    FourierImage,
    ImageParam,
    ModelSpaceImage,
    PixelImage,
    image_param,
    straight_clamp,
)
from convscope.synthesize.transforms import (
    GaussianBlur,
    Jitter,
    Pad,
    RandomRotate,
    RandomScale,
    Roll,
    gaussian_blur,
    rotate,
    standard,
)


def _image(h: int = 12, w: int = 10, seed: int = 0) -> Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_fourier_spectrum_is_scaled_by_one_over_frequency() -> None:
    p = FourierImage((8, 6))
    scale = p.spectrum_scale  # (8, 4)
    assert scale.shape == (8, 4)
    assert float(scale[0, 0]) == pytest.approx(8.0)  # DC: 1 / (1 / max(h, w))
    f = math.sqrt((1 / 8) ** 2 + (2 / 6) ** 2)  # fy = 1/8 (row 1), fx = 2/6 (column 2)
    assert float(scale[1, 2]) == pytest.approx(1 / f, rel=1e-5)
    half = FourierImage((8, 6), decay_power=0.5).spectrum_scale
    assert float(half[1, 2]) == pytest.approx(1 / math.sqrt(f), rel=1e-5)


@pytest.mark.parametrize(("h", "w"), [(8, 8), (9, 7), (12, 10)])
def test_fourier_image_inverts(h: int, w: int) -> None:
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(1))
    p = FourierImage((h, w), batch=2, init=x)
    assert torch.allclose(p(), x, atol=1e-5)


def test_color_decorrelation_is_invertible() -> None:
    c = ColorDecorrelation()
    x = torch.randn(2, 3, 4, 5)
    assert torch.allclose(c.inverse(c(x)), x, atol=1e-5)
    assert float(c.matrix.norm(dim=0).max()) == pytest.approx(1.0)


@pytest.mark.parametrize("fft", [True, False])
@pytest.mark.parametrize("decorrelate", [True, False])
@pytest.mark.parametrize("activation", ["sigmoid", "clamp"])
def test_image_param_starts_from_an_image(fft: bool, decorrelate: bool, activation: str) -> None:
    img = _image().clamp(0.05, 0.95)
    p = image_param(
        (12, 10),
        fft=fft,
        decorrelate=decorrelate,
        activation=activation,  # type: ignore[arg-type]
        init=img,
    )
    out = p()
    assert out.shape == (1, 3, 12, 10)
    assert torch.allclose(out, img, atol=2e-4)


def test_image_param_is_in_range_and_batched() -> None:
    p = image_param(16, batch=3, sd=1.0)
    out = p()
    assert out.shape == (3, 3, 16, 16)
    assert float(out.detach().min()) >= 0.0 and float(out.detach().max()) <= 1.0
    assert not torch.allclose(out[0], out[1])
    with pytest.raises(UserInputError, match="batch"):
        image_param(16, batch=0)
    with pytest.raises(UserInputError, match="size"):
        image_param(0)
    with pytest.raises(UserInputError, match="initial image is 10x12"):
        image_param((8, 8), init=_image())


def test_straight_clamp_passes_the_gradient_and_gradchecks() -> None:
    x = torch.tensor([-0.5, 0.25, 1.5], dtype=torch.float64, requires_grad=True)
    y = straight_clamp(x)
    assert y.tolist() == [0.0, 0.25, 1.0]
    (g,) = torch.autograd.grad(y.sum(), x)
    assert g.tolist() == [1.0, 1.0, 1.0]
    inside = torch.tensor([0.2, 0.5, 0.7], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(straight_clamp, (inside,))


def test_model_space_image_shows_pixels_and_clamps() -> None:
    pre = Preprocess(resize=None, crop=None, scale=255.0, mean=(127.0,) * 3, std=(128.0,) * 3)
    img = _image()
    p = ModelSpaceImage(pre, (12, 10), init=img)
    assert torch.allclose(p(), img, atol=1e-6)
    assert torch.allclose(p.values, pre.normalize(img))
    with torch.no_grad():
        p.values.mul_(10)
    p.clamp_()
    shown = p().detach()
    assert float(shown.min()) >= -1e-6 and float(shown.max()) <= 1 + 1e-6


def test_pixel_image_holds_its_start() -> None:
    img = _image()
    p = PixelImage((12, 10), init=img)
    assert torch.equal(p(), img)
    assert ImageParam(p, decorrelate=False, activation="none")().shape == (1, 3, 12, 10)


TRANSFORMS = [
    Pad(3),
    Pad(2, mode="reflect"),
    Jitter(4),
    Roll(3),
    RandomScale([0.8, 1.2]),
    RandomRotate([-10.0, 10.0]),
    GaussianBlur(1.0),
]


@pytest.mark.parametrize("t", TRANSFORMS, ids=lambda t: type(t).__name__)
def test_each_transform_keeps_the_batch_and_is_differentiable(t: torch.nn.Module) -> None:
    x = _image(16, 16).expand(2, 3, 16, 16).clone().requires_grad_()
    torch.manual_seed(0)
    y = t(x)
    assert y.dim() == 4 and y.shape[:2] == (2, 3)
    (g,) = torch.autograd.grad(y.square().sum(), x)
    assert g.shape == x.shape and float(g.abs().sum()) > 0
    if isinstance(t, (Roll, GaussianBlur, RandomRotate)):
        assert y.shape == x.shape
    if isinstance(t, Jitter):
        assert y.shape[-2:] == (12, 12)
    if isinstance(t, Pad):
        assert y.shape[-2:] == (16 + 2 * t.pad, 16 + 2 * t.pad)


def test_rotate_by_90_degrees_moves_pixels_as_expected() -> None:
    x = torch.zeros(1, 3, 5, 5)
    x[..., 0, 2] = 1.0  # the middle of the top row
    y = rotate(x, 90.0)
    # A quarter turn counter-clockwise takes the top middle to the left middle.
    assert float(y[0, 0, 2, 0]) == pytest.approx(1.0, abs=1e-5)
    assert float(rotate(x, 0.0).sub(x).abs().max()) < 1e-6
    corner = rotate(torch.zeros(1, 3, 16, 16), 45.0, fill=0.5)
    assert float(corner[0, 0, 0, 0]) == pytest.approx(0.5, abs=1e-5)


def test_gaussian_blur_keeps_the_mean_of_a_flat_image() -> None:
    flat = torch.full((1, 3, 9, 9), 0.4)
    assert torch.allclose(gaussian_blur(flat, 1.5), flat)
    x = _image(9, 9)
    assert float(gaussian_blur(x, 1.0).std()) < float(x.std())


def test_standard_transforms_are_seeded() -> None:
    x = _image(32, 32)
    torch.manual_seed(3)
    a = standard()(x)
    torch.manual_seed(3)
    b = standard()(x)
    assert torch.equal(a, b)
