"""Colour control for style transfer: the YCbCr conversions against the BT.601 constants,
luminance-only transfer keeping the content's chroma, histogram matching reproducing the
reference's per-channel CDF, and Reinhard's L*a*b* mean/std transfer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.color import rgb2lab
from torch import Tensor

from convscope.errors import UnknownNameError, UserInputError
from convscope.synthesize.colors import (
    COLOR_TRANSFERS,
    color_transfer,
    lab_transfer,
    match_histograms,
    original_colors,
    rgb_to_ycbcr,
    ycbcr_to_rgb,
)


def _rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _lab(image: Tensor) -> np.ndarray:  # (3, H, W) → (H·W, 3) L*a*b*
    return np.asarray(rgb2lab(image.permute(1, 2, 0).double().numpy())).reshape(-1, 3)


# ---- YCbCr -----------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    batch=st.one_of(st.none(), st.integers(1, 3)),
    double=st.booleans(),
)
def test_ycbcr_round_trip(seed: int, h: int, w: int, batch: int | None, double: bool) -> None:
    dtype = torch.float64 if double else torch.float32
    shape = (3, h, w) if batch is None else (batch, 3, h, w)
    rgb = _rand(*shape, seed=seed, dtype=dtype)
    ycbcr = rgb_to_ycbcr(rgb)
    assert ycbcr.shape == rgb.shape and ycbcr.dtype == dtype
    assert float(ycbcr.min()) >= -1e-6 and float(ycbcr.max()) <= 1 + 1e-6  # the cube maps inside
    back = ycbcr_to_rgb(ycbcr)
    torch.testing.assert_close(back, rgb, atol=1e-12 if double else 1e-6, rtol=0)
    torch.testing.assert_close(rgb_to_ycbcr(back), ycbcr, atol=1e-12 if double else 1e-6, rtol=0)


@pytest.mark.parametrize(
    ("rgb", "ycbcr"),
    [
        ((1.0, 1.0, 1.0), (1.0, 0.5, 0.5)),
        ((0.0, 0.0, 0.0), (0.0, 0.5, 0.5)),
        ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ((1.0, 0.0, 0.0), (0.299, 0.5 - 0.168736, 1.0)),
        ((0.0, 1.0, 0.0), (0.587, 0.5 - 0.331264, 0.5 - 0.418688)),
        ((0.0, 0.0, 1.0), (0.114, 1.0, 0.5 - 0.081312)),
    ],
)
def test_ycbcr_known_values(rgb: tuple[float, ...], ycbcr: tuple[float, ...]) -> None:
    x = torch.tensor(rgb, dtype=torch.float64)[:, None, None].expand(3, 2, 2)
    want = torch.tensor(ycbcr, dtype=torch.float64)[:, None, None].expand(3, 2, 2)
    torch.testing.assert_close(rgb_to_ycbcr(x), want, atol=1e-6, rtol=0)  # JFIF's 6 decimals
    torch.testing.assert_close(ycbcr_to_rgb(want), x, atol=1e-5, rtol=0)


def test_ycbcr_is_differentiable() -> None:
    rgb = _rand(1, 3, 4, 4).requires_grad_()
    ycbcr_to_rgb(rgb_to_ycbcr(rgb)).sum().backward()
    assert rgb.grad is not None
    torch.testing.assert_close(rgb.grad, torch.ones_like(rgb))


# ---- luminance-only transfer -----------------------------------------------------------------
def _in_gamut_pair(dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """A grey-ish output and a content of moderate colours: Y(output) + CbCr(content) stays
    inside the RGB cube, so nothing is clamped."""
    content = 0.4 + 0.2 * _rand(2, 3, 12, 10, seed=1, dtype=dtype)  # (B, 3, H, W)
    grey = 0.45 + 0.1 * _rand(2, 1, 12, 10, seed=2, dtype=dtype)
    output = grey + 0.02 * (_rand(2, 3, 12, 10, seed=3, dtype=dtype) - 0.5)
    return output, content


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_original_colors_keeps_the_contents_chroma_exactly(dtype: torch.dtype, tol: float) -> None:
    output, content = _in_gamut_pair(dtype)
    raw = ycbcr_to_rgb(torch.cat([rgb_to_ycbcr(output)[:, :1], rgb_to_ycbcr(content)[:, 1:]], 1))
    assert float(raw.min()) > 0.05 and float(raw.max()) < 0.95  # the clamp does nothing here
    result = original_colors(output, content)
    assert result.shape == output.shape and result.dtype == dtype
    got, want_chroma, want_luma = rgb_to_ycbcr(result), rgb_to_ycbcr(content), rgb_to_ycbcr(output)
    torch.testing.assert_close(got[:, 1:], want_chroma[:, 1:], atol=tol, rtol=0)
    torch.testing.assert_close(got[:, :1], want_luma[:, :1], atol=tol, rtol=0)


def test_original_colors_keeps_the_single_image_layout() -> None:
    output, content = _in_gamut_pair()
    result = original_colors(output[0], content[0])
    assert result.shape == (3, 12, 10)
    torch.testing.assert_close(result, original_colors(output, content)[0])


def test_original_colors_one_content_for_a_batch() -> None:
    output, content = _in_gamut_pair()
    result = original_colors(output, content[0])  # (3, H, W) content for a (2, 3, H, W) output
    torch.testing.assert_close(
        rgb_to_ycbcr(result)[:, 1:], rgb_to_ycbcr(content[:1])[:, 1:].expand(2, -1, -1, -1)
    )


@pytest.mark.parametrize("size", [(24, 20), (6, 5), (24, 5)])  # up, down (antialiased), mixed
def test_original_colors_resizes_the_content(size: tuple[int, int]) -> None:
    _, content = _in_gamut_pair()  # (2, 3, 12, 10)
    output = torch.full((2, 3, *size), 0.5, dtype=torch.float64)
    result = original_colors(output, content)
    assert result.shape == (2, 3, *size)
    shrink = size[0] < 12 or size[1] < 10
    resized = torch.nn.functional.interpolate(
        content, size=size, mode="bilinear", align_corners=False, antialias=shrink
    )
    got = rgb_to_ycbcr(result)
    torch.testing.assert_close(got[:, 1:], rgb_to_ycbcr(resized)[:, 1:], atol=1e-12, rtol=0)
    torch.testing.assert_close(got[:, :1], torch.full_like(got[:, :1], 0.5), atol=1e-12, rtol=0)
    # a constant content keeps its chroma exactly through any resize
    flat = torch.tensor([0.55, 0.45, 0.5], dtype=torch.float64)[:, None, None].expand(3, 5, 7)
    want = rgb_to_ycbcr(flat)[1:, :1, :1].expand(2, -1, *size)
    got = rgb_to_ycbcr(original_colors(output, flat))[:, 1:]
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


def test_original_colors_clamps_to_the_unit_cube() -> None:
    output = torch.ones(3, 8, 8, dtype=torch.float64)  # white: Y = 1
    content = torch.zeros(3, 8, 8, dtype=torch.float64)
    content[0] = 1.0  # saturated red: Cr = 1, so R = 1 + 0.701 before the clamp
    result = original_colors(output, content)
    assert float(result.min()) >= 0.0 and float(result.max()) <= 1.0
    assert float(result[0].min()) == 1.0


def test_original_colors_is_differentiable_in_the_output() -> None:
    output, content = _in_gamut_pair()
    output = output.clone().requires_grad_()
    original_colors(output, content).sum().backward()
    assert output.grad is not None and bool(torch.isfinite(output.grad).all())
    assert float(output.grad.abs().sum()) > 0


# ---- histogram matching ----------------------------------------------------------------------
def _distinct_pair() -> tuple[Tensor, Tensor]:
    """A dark, skewed source and a bright reference of another size, each channel different."""
    source = (
        _rand(3, 40, 50, seed=4)
        ** torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)[:, None, None]
    )
    reference = (
        _rand(3, 64, 32, seed=5)
        ** torch.tensor([0.3, 0.5, 0.8], dtype=torch.float64)[:, None, None]
    )
    reference[2] = 0.2 + 0.6 * reference[2]  # a range inside [0, 1]
    return source, reference


def _ks(a: Tensor, b: Tensor) -> float:
    """The Kolmogorov–Smirnov statistic: the largest gap between two empirical CDFs."""
    grid = torch.cat([a, b]).sort().values
    cdf_a = torch.searchsorted(a.sort().values, grid, right=True) / a.numel()
    cdf_b = torch.searchsorted(b.sort().values, grid, right=True) / b.numel()
    return float((cdf_a - cdf_b).abs().max())


def test_histogram_matching_reproduces_the_references_cdf() -> None:
    source, reference = _distinct_pair()
    q = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    before = (
        torch.quantile(source.flatten(1), q, dim=1) - torch.quantile(reference.flatten(1), q, dim=1)
    ).abs()
    assert float(before.max()) > 0.3  # clearly different distributions to begin with
    result = match_histograms(source, reference)
    assert result.shape == source.shape and result.dtype == source.dtype
    for c in range(3):
        got, want = result[c].flatten(), reference[c].flatten()
        assert float((torch.quantile(got, q) - torch.quantile(want, q)).abs().max()) < 1 / 255
        assert _ks(got, want) < 0.01


def test_histogram_matching_is_monotone_in_each_channel() -> None:
    source, reference = _distinct_pair()
    source[1, :5, :5] = 0.25  # ties: equal inputs give equal outputs
    result = match_histograms(source, reference)
    for c in range(3):
        order = torch.argsort(source[c].flatten(), stable=True)
        mapped = result[c].flatten()[order]
        assert bool((mapped[1:] >= mapped[:-1]).all())
    assert bool((result[1, :5, :5] == result[1, 0, 0]).all())


def test_histogram_matching_batches_and_keeps_the_layout() -> None:
    source, reference = _distinct_pair()
    batch = torch.stack([source, source.flip(-1)])  # (2, 3, H, W)
    one_ref = match_histograms(batch, reference)  # one reference for the batch
    assert one_ref.shape == batch.shape
    torch.testing.assert_close(one_ref[0], match_histograms(source, reference))
    torch.testing.assert_close(one_ref[1], match_histograms(source.flip(-1), reference))
    per_image = match_histograms(batch, torch.stack([reference, reference.flip(1)]))
    torch.testing.assert_close(per_image[1], match_histograms(source.flip(-1), reference.flip(1)))
    f32 = match_histograms(source.float(), reference.float())
    assert f32.dtype == torch.float32 and f32.shape == (3, 40, 50)


# ---- Reinhard L*a*b* transfer ----------------------------------------------------------------
def _moderate_pair() -> tuple[Tensor, Tensor]:
    """Two differently tinted images of moderate colours, of different sizes: the transferred
    colours stay inside the sRGB gamut, so the clamp is negligible."""
    source = 0.35 + 0.3 * _rand(3, 40, 50, seed=6)
    source[0] *= 0.8  # a cyan-ish tint
    reference = 0.3 + 0.3 * _rand(3, 30, 60, seed=7)
    reference[2] *= 0.7  # a yellow-ish tint
    return source, reference


def test_lab_transfer_matches_the_references_mean_and_std() -> None:
    source, reference = _moderate_pair()
    result = lab_transfer(source, reference)
    assert result.shape == source.shape and result.dtype == source.dtype
    assert float(result.min()) > 0.01 and float(result.max()) < 0.99  # no clamping happened
    got, want, before = _lab(result), _lab(reference), _lab(source)
    assert np.abs(before.mean(0) - want.mean(0)).max() > 5  # clearly different to begin with
    np.testing.assert_allclose(got.mean(0), want.mean(0), atol=1e-3)
    np.testing.assert_allclose(got.std(0), want.std(0), atol=1e-3)


def test_lab_transfer_clamps_and_handles_flat_images() -> None:
    source = torch.full((3, 6, 6), 0.5, dtype=torch.float64)  # flat: σ = 0 in every channel
    reference = _rand(3, 9, 4, seed=8)
    result = lab_transfer(source, reference)
    assert bool(torch.isfinite(result).all())
    assert float(result.min()) >= 0.0 and float(result.max()) <= 1.0
    np.testing.assert_allclose(_lab(result).mean(0), _lab(reference).mean(0), atol=0.5)
    wild = lab_transfer(
        _rand(3, 8, 8, seed=9), torch.eye(3, dtype=torch.float64)[:, :, None].expand(3, 3, 3)
    )
    assert float(wild.min()) >= 0.0 and float(wild.max()) <= 1.0


# ---- dispatch --------------------------------------------------------------------------------
def test_color_transfer_dispatches() -> None:
    source, reference = _moderate_pair()
    assert COLOR_TRANSFERS == ("histogram", "lab")
    torch.testing.assert_close(
        color_transfer(source, reference, "histogram"), match_histograms(source, reference)
    )
    torch.testing.assert_close(
        color_transfer(source, reference, "lab"), lab_transfer(source, reference)
    )


def test_unknown_color_transfer() -> None:
    source, reference = _moderate_pair()
    with pytest.raises(
        UnknownNameError, match=r"Unknown color transfer 'hist'; did you mean 'histogram'\?"
    ):
        color_transfer(source, reference, "hist")
    with pytest.raises(UserInputError, match=r"'histogram', 'lab'\.$"):
        color_transfer(source, reference, "xyz")


# ---- bad input -------------------------------------------------------------------------------
_GOOD = _rand(3, 4, 4)
_BAD = [
    (torch.rand(4, 4), "shape"),
    (torch.rand(1, 4, 4), "shape"),
    (torch.rand(2, 4, 4, 4), "shape"),
    (torch.rand(1, 1, 3, 4, 4), "shape"),
    (torch.rand(3, 0, 4), "shape"),
    (torch.zeros(3, 4, 4, dtype=torch.uint8), "dtype"),
    (torch.tensor(float("nan")).expand(3, 4, 4), "NaN"),
    (torch.tensor(float("inf")).expand(1, 3, 4, 4), "NaN"),
]


def _one_sentence(err: pytest.ExceptionInfo[UserInputError]) -> None:
    msg = str(err.value)
    assert msg.endswith(".") and msg.count(". ") == 0 and "\n" not in msg


@pytest.mark.parametrize(("bad", "word"), _BAD)
@pytest.mark.parametrize(
    "call",
    [
        lambda x: rgb_to_ycbcr(x),
        lambda x: ycbcr_to_rgb(x),
        lambda x: original_colors(x, _GOOD),
        lambda x: original_colors(_GOOD, x),
        lambda x: match_histograms(x, _GOOD),
        lambda x: match_histograms(_GOOD, x),
        lambda x: lab_transfer(x, _GOOD),
        lambda x: color_transfer(_GOOD, x, "lab"),
    ],
)
def test_bad_input_raises_one_sentence(bad: Tensor, word: str, call: object) -> None:
    with pytest.raises(UserInputError, match=word) as err:
        call(bad)  # type: ignore[operator]
    _one_sentence(err)


def test_mismatched_batches_and_non_tensors_raise() -> None:
    with pytest.raises(UserInputError, match="one per") as err:
        match_histograms(_rand(2, 3, 4, 4), _rand(3, 3, 4, 4))
    _one_sentence(err)
    with pytest.raises(UserInputError, match="one per") as err:
        original_colors(_GOOD, _rand(2, 3, 4, 4))
    _one_sentence(err)
    with pytest.raises(UserInputError, match="torch tensor") as err:
        rgb_to_ycbcr(np.zeros((3, 4, 4)))  # type: ignore[arg-type]
    _one_sentence(err)


# ---- inputs are left alone -------------------------------------------------------------------
@pytest.mark.parametrize(
    "fn",
    [
        original_colors,
        match_histograms,
        lab_transfer,
        lambda a, b: color_transfer(a, b, "histogram"),
    ],
)
def test_inputs_are_not_mutated(fn: object) -> None:
    a, b = _moderate_pair()
    a_copy, b_copy = a.clone(), b.clone()
    fn(a, b)  # type: ignore[operator]
    assert torch.equal(a, a_copy) and torch.equal(b, b_copy)
    x = _rand(2, 3, 5, 5)
    x_copy = x.clone()
    ycbcr_to_rgb(rgb_to_ycbcr(x))
    assert torch.equal(x, x_copy)
