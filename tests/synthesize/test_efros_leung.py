"""Efros & Leung / Wei & Levoy non-parametric texture synthesis: a periodic exemplar gives a
periodic texture, every output pixel is an exemplar pixel, seeds decide the image, shapes,
progress, and one-sentence errors for bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from convscope.errors import UserInputError
from convscope.events import Progress
from convscope.synthesize.efros_leung import EfrosLeungResult, efros_leung


def _noise(h: int, w: int, seed: int = 0) -> Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


def _periodic(period: tuple[int, int] = (5, 7), size: int = 35, seed: int = 1) -> Tensor:
    """A random-colour tile of `period` (every colour distinct, so the period is exact)
    repeated to `size`×`size`."""
    tile = np.random.default_rng(seed).random((3, *period)).astype(np.float32)
    reps = (1, -(-size // period[0]), -(-size // period[1]))
    return torch.from_numpy(np.tile(tile, reps)[:, :size, :size].copy())


def _colours(image: Tensor) -> set[tuple[float, ...]]:
    return {tuple(c) for c in image.reshape(3, -1).T.tolist()}


def _period_share(out: Tensor, dy: int, dx: int) -> float:
    """The share of pixels equal (all channels, exactly) to the pixel dy rows below and dx
    columns right, over every pixel that has such a partner."""
    h, w = out.shape[1:]
    a = out[:, : h - dy, : w - dx]
    b = out[:, dy:, dx:]
    return float((a == b).all(dim=0).float().mean())


@pytest.mark.parametrize("levels", [1, 2])
def test_a_periodic_exemplar_gives_a_texture_with_the_same_period(levels: int) -> None:
    # Criterion: over the whole 48×48 output (the first rows included), at least 95% of the
    # pixels equal the pixel one period (5 rows) below, and 95% the one 7 columns right.
    # It holds at 2 levels too: the coarse exemplar keeps the 5×7 period (in coarse pixels),
    # and fine pixels follow a coarse phase p at the fine phase 2p.
    ex = _periodic()
    out = efros_leung(ex, 48, levels=levels, epsilon=0.0).image
    assert _period_share(out, 5, 0) >= 0.95
    assert _period_share(out, 0, 7) >= 0.95
    # and not trivially: the output is not one colour, it holds the whole tile
    assert len(_colours(out)) == 35


def test_every_output_pixel_is_an_exemplar_pixel() -> None:
    ex = _noise(20, 18, seed=3).double()  # float64 in, compared as float32 copies
    res = efros_leung(ex, (30, 41), window=5, levels=2, seed=5)
    assert _colours(res.image) <= _colours(ex.float())
    periodic = _periodic()
    assert _colours(efros_leung(periodic, 40, levels=2).image) <= _colours(periodic)


def test_a_grayscale_exemplar_gives_a_grayscale_texture() -> None:
    gray = _noise(16, 16, seed=4)[:1].expand(3, 16, 16)
    out = efros_leung(gray, 20, window=5, levels=2).image
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])


def test_the_seed_decides_the_image() -> None:
    ex = _noise(16, 16, seed=2)
    a = efros_leung(ex, 24, window=5, levels=2, seed=7).image
    b = efros_leung(ex, 24, window=5, levels=2, seed=7).image
    c = efros_leung(ex, 24, window=5, levels=2, seed=8).image
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize(
    ("size", "expected"), [((20, 37), (20, 37)), ((37, 5), (37, 5)), (33, (33, 33)), (1, (1, 1))]
)
def test_output_shape_dtype_and_range(
    size: int | tuple[int, int], expected: tuple[int, int]
) -> None:
    ex = _noise(16, 16, seed=6)  # outputs larger than the exemplar too
    res = efros_leung(ex[None], size, window=5, levels=2)
    assert isinstance(res, EfrosLeungResult)
    assert res.image.shape == (3, *expected)
    assert res.image.dtype == torch.float32
    assert float(res.image.min()) >= 0.0 and float(res.image.max()) <= 1.0
    assert (res.levels, res.window) == (2, 5)
    assert res.seconds >= 0.0


def test_the_callers_tensor_is_left_alone() -> None:
    ex = _noise(16, 16, seed=9)
    before = ex.clone()
    out = efros_leung(ex, 20, window=5, levels=2).image
    assert torch.equal(ex, before)
    out.zero_()  # the result does not share memory with the exemplar either
    assert torch.equal(ex, before)


def test_progress_counts_rows_up_to_the_total() -> None:
    events: list[Progress] = []
    efros_leung(_noise(16, 16), (12, 9), window=5, levels=2, on_progress=events.append)
    assert {(e.task, e.unit) for e in events} == {("efros-leung", "rows")}
    done = [e.done for e in events]
    assert done[0] == 0 and done == sorted(done)
    total = events[0].total
    # rows of both levels (12 + 6) and the first 2 * (5 // 2) rows of each synthesized again
    assert total == 12 + 6 + 4 + 4
    assert done[-1] == total and all(e.total == total for e in events)


_GOOD: dict[str, Any] = {"window": 5, "levels": 1}


@pytest.mark.parametrize(
    ("exemplar", "size", "kwargs", "needle"),
    [
        (_noise(8, 8)[0], 8, _GOOD, "shape"),
        (_noise(8, 8)[None].expand(2, 3, 8, 8), 8, _GOOD, "shape"),
        (torch.rand(4, 8, 8), 8, _GOOD, "shape"),
        (np.zeros((3, 8, 8), dtype=np.float32), 8, _GOOD, "torch tensor"),
        (torch.full((3, 8, 8), float("nan")), 8, _GOOD, "NaN"),
        (torch.full((3, 8, 8), float("inf")), 8, _GOOD, "infinite"),
        (torch.zeros(3, 8, 8, dtype=torch.uint8), 8, _GOOD, "float"),
        (torch.full((3, 8, 8), 2.0), 8, _GOOD, "[0, 1]"),
        (_noise(5, 9), 8, {"window": 7}, "7×7"),
        (_noise(8, 8), 8, {"window": 6}, "odd"),
        (_noise(8, 8), 8, {"window": 1}, "odd"),
        (_noise(8, 8), 8, {"window": 5.0}, "integer"),
        (_noise(8, 8), 8, {"window": True}, "integer"),
        (_noise(8, 8), 8, {"window": 5, "levels": 0}, "at least 1"),
        (_noise(40, 40), 8, {"window": 5, "levels": 5}, "at most 4"),
        (_noise(8, 8), 8, {"window": 5, "levels": 1.0}, "integer"),
        (_noise(8, 8), 0, _GOOD, "at least 1 pixel"),
        (_noise(8, 8), (8, 0), _GOOD, "at least 1 pixel"),
        (_noise(8, 8), (8,), _GOOD, "pair"),
        (_noise(8, 8), "8", _GOOD, "pair"),
        (_noise(8, 8), (8.0, 8), _GOOD, "integers"),
        (_noise(8, 8), True, _GOOD, "pair"),
        (_noise(8, 8), 8, {**_GOOD, "epsilon": -0.1}, "at least 0"),
        (_noise(8, 8), 8, {**_GOOD, "epsilon": float("nan")}, "finite"),
        (_noise(8, 8), 8, {**_GOOD, "epsilon": float("inf")}, "finite"),
        (_noise(8, 8), 8, {**_GOOD, "epsilon": "0.1"}, "number"),
        (_noise(8, 8), 8, {**_GOOD, "candidates": 0}, "at least 1"),
        (_noise(8, 8), 8, {**_GOOD, "candidates": 2.0}, "integer"),
        (_noise(8, 8), 8, {**_GOOD, "seed": 1.5}, "integer"),
    ],
)
def test_bad_input_raises_one_sentence(
    exemplar: Any, size: Any, kwargs: dict[str, Any], needle: str
) -> None:
    with pytest.raises(UserInputError) as info:
        efros_leung(exemplar, size, **kwargs)
    msg = str(info.value)
    assert needle in msg
    assert msg.endswith(".") and ". " not in msg and "\n" not in msg


def test_the_level_limit_is_the_one_the_message_names() -> None:
    ex = _noise(40, 40)  # 40, 20, 10, 5 pixels a side: 4 levels of at least 5
    assert efros_leung(ex, 6, window=5, levels=4).levels == 4


@settings(max_examples=10, deadline=None)
@given(
    h=st.integers(5, 12),
    w=st.integers(5, 12),
    height=st.integers(1, 16),
    width=st.integers(1, 16),
    two_levels=st.booleans(),
    window=st.sampled_from([3, 5]),
    epsilon=st.sampled_from([0.0, 0.1, 0.5]),
    seed=st.integers(0, 2**16),
)
def test_any_small_exemplar_gives_exemplar_colours_in_the_right_shape(
    h: int,
    w: int,
    height: int,
    width: int,
    two_levels: bool,
    window: int,
    epsilon: float,
    seed: int,
) -> None:
    ex = torch.from_numpy(np.random.default_rng(seed).random((3, h, w)).astype(np.float32))
    levels = 2 if two_levels and min(h, w) >= 2 * window - 1 else 1
    out = efros_leung(
        ex, (height, width), window=window, levels=levels, epsilon=epsilon, seed=seed
    ).image
    assert out.shape == (3, height, width)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert _colours(out) <= _colours(ex)
