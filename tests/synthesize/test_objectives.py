"""The objective algebra, the building blocks against hand computations, Gram matrices and
total variation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from convscope.errors import UserInputError
from convscope.models.base import Preprocess
from convscope.synthesize.objectives import (
    OUTPUT,
    Inputs,
    Window,
    alpha_norm,
    blur_input_each_step,
    channel,
    class_logit,
    class_prob,
    deepdream,
    direction,
    diversity,
    feature_match,
    gram_match,
    gram_matrix,
    l1,
    l2,
    neuron,
    total,
    total_variation,
)

HALF = Preprocess(resize=None, crop=None, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def _inputs(
    acts: dict[str, Tensor] | None = None,
    image: Tensor | None = None,
    output: Tensor | None = None,
) -> Inputs:
    img = torch.full((1, 3, 4, 4), 0.5) if image is None else image
    return Inputs(acts or {}, img, output, HALF)  # model input: 2x - 1


def _act(seed: int = 0, shape: tuple[int, ...] = (2, 3, 4, 5)) -> Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_sums_differences_and_scalings_give_the_right_values() -> None:
    a = _act(1)
    inputs = _inputs({"l": a})
    c0, c2 = float(a[:, 0].mean()), float(a[:, 2].mean())
    obj = 2.0 * channel("l", 0) - channel("l", 2) / 4 + 0.5 * channel("l", 0)
    assert float(obj(inputs)) == pytest.approx(2.5 * c0 - 0.25 * c2, rel=1e-6)
    assert float((-obj)(inputs)) == pytest.approx(-(2.5 * c0 - 0.25 * c2), rel=1e-6)
    assert float(sum([channel("l", 0), channel("l", 2)])(inputs)) == pytest.approx(c0 + c2)
    assert float(total([channel("l", 0)] * 3)(inputs)) == pytest.approx(3 * c0, rel=1e-6)


def test_gradients_follow_the_weights() -> None:
    a = _act(2).requires_grad_()
    obj = 3.0 * channel("l", 1) - 0.5 * deepdream("l")
    (g,) = torch.autograd.grad(obj(_inputs({"l": a})), a)
    want = torch.zeros_like(a)
    want[:, 1] = 3.0 / (a.shape[0] * a.shape[2] * a.shape[3])
    want -= 0.5 * 2 * a.detach() / a.numel()
    assert torch.allclose(g, want, atol=1e-7)


def test_layers_are_merged() -> None:
    obj = channel("relu4_3", 1) + channel("relu4_3", 2) - 1e-3 * l2() + class_logit(3)
    assert obj.layers == frozenset({"relu4_3", OUTPUT})
    assert obj.needs_output
    assert not (channel("a", 0) + channel("b", 0)).needs_output
    assert (channel("a", 0) + channel("b", 0)).layers == {"a", "b"}


def test_repr_reads_as_written() -> None:
    assert repr(2.0 * channel("relu4_3", 42) - 1e-3 * l2()) == (
        "2.0 * channel('relu4_3', 42) - 0.001 * l2()"
    )
    assert repr(-channel("x", 1) + neuron("x", 2, 3, 4)) == (
        "-channel('x', 1) + neuron('x', 2, 3, 4)"
    )
    assert repr(class_prob(5, batch=1)) == "class_prob(5, batch=1)"
    assert repr(total_variation() * 2) == "2.0 * total_variation(beta=2.0)"
    assert repr((channel("a", 0) * 5).named("content")) == "content=(5.0 * channel('a', 0))"


def test_losses_by_term_are_minus_the_weighted_values() -> None:
    a = _act(3)
    obj = (5.0 * channel("l", 0)).named("content") - 2.0 * deepdream("l")
    value, losses = obj.evaluate(_inputs({"l": a}))
    assert set(losses) == {"content", "deepdream('l')"}
    assert float(losses["content"]) == pytest.approx(-5.0 * float(a[:, 0].mean()), rel=1e-6)
    assert float(losses["deepdream('l')"]) == pytest.approx(2.0 * float(a.pow(2).mean()))
    assert float(value) == pytest.approx(-sum(float(v) for v in losses.values()), rel=1e-6)


def test_bad_weights_and_operands() -> None:
    with pytest.raises(UserInputError, match="finite"):
        _ = channel("a", 0) * float("nan")
    with pytest.raises(UserInputError, match="divide"):
        _ = channel("a", 0) / 0
    with pytest.raises(TypeError):
        _ = channel("a", 0) + "x"  # type: ignore[operator]
    with pytest.raises(UserInputError, match="no objectives"):
        total([])


def test_class_objectives() -> None:
    out = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
    inputs = _inputs(output=out)
    assert float(class_logit(2)(inputs)) == pytest.approx(4.5)
    assert float(class_logit(2, batch=1)(inputs)) == pytest.approx(6.0)
    want = float(out.softmax(1)[:, 0].mean())
    assert float(class_prob(0)(inputs)) == pytest.approx(want)
    with pytest.raises(UserInputError, match="out of range"):
        class_logit(7)(inputs)


def test_neuron_is_the_centre_by_default_and_checks_positions() -> None:
    a = _act(4)  # (2, 3, 4, 5)
    inputs = _inputs({"l": a})
    assert float(neuron("l", 1)(inputs)) == pytest.approx(float(a[:, 1, 2, 2].mean()))
    assert float(neuron("l", 1, 0, 4)(inputs)) == pytest.approx(float(a[:, 1, 0, 4].mean()))
    with pytest.raises(UserInputError, match="outside layer l's 4x5 output"):
        neuron("l", 1, 4, 0)(inputs)
    with pytest.raises(UserInputError, match=r"channel 3 is out of range 0\.\.2"):
        channel("l", 3)(inputs)
    flat = _inputs({"fc": torch.tensor([[1.0, 5.0]])})
    assert float(neuron("fc", 1)(flat)) == 5.0


def test_direction_is_a_cosine() -> None:
    a = torch.zeros(1, 2, 1, 2)
    a[0, :, 0, 0] = torch.tensor([1.0, 0.0])
    a[0, :, 0, 1] = torch.tensor([1.0, 1.0])
    got = float(direction("l", [1.0, 0.0])(_inputs({"l": a})))
    assert got == pytest.approx((1.0 + 1 / math.sqrt(2)) / 2)
    with pytest.raises(UserInputError, match="3 values but layer l has 2"):
        direction("l", [1.0, 0.0, 0.0])(_inputs({"l": a}))


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 3),
    c=st.integers(1, 4),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    seed=st.integers(0, 10_000),
)
def test_gram_matrix_equals_its_definition(b: int, c: int, h: int, w: int, seed: int) -> None:
    f = _act(seed, (b, c, h, w)).double()
    g = gram_matrix(f)
    want = torch.zeros(b, c, c, dtype=torch.float64)
    for k in range(b):
        for i in range(c):
            for j in range(c):
                want[k, i, j] = (f[k, i] * f[k, j]).sum() / (h * w)
    assert torch.allclose(g, want)
    assert torch.allclose(g, g.transpose(1, 2))


def test_gram_matrix_has_gradients_that_gradcheck() -> None:
    f = _act(5, (1, 2, 3, 3)).double().requires_grad_()
    assert torch.autograd.gradcheck(gram_matrix, (f,))


def test_matching_penalties_are_relative_errors() -> None:
    t = _act(6, (1, 3, 4, 4))
    same = _inputs({"l": t.clone()})
    assert float(feature_match("l", t)(same)) == pytest.approx(0.0, abs=1e-12)
    assert float(feature_match("l", t)(_inputs({"l": torch.zeros_like(t)}))) == pytest.approx(1.0)
    doubled = _inputs({"l": 2 * t})
    assert float(feature_match("l", t)(doubled)) == pytest.approx(1.0, rel=1e-5)
    gram = gram_matrix(t)[0]
    assert float(gram_match("l", gram)(same)) == pytest.approx(0.0, abs=1e-10)
    assert float(gram_match("l", gram)(doubled)) == pytest.approx(9.0, rel=1e-5)  # (4G−G)²/G²
    with pytest.raises(UserInputError, match="target features"):
        feature_match("l", t)(_inputs({"l": torch.zeros(1, 3, 2, 2)}))


@given(
    c=st.integers(1, 4),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    seed=st.integers(0, 10_000),
)
def test_a_masked_gram_matrix_uses_only_the_masked_positions(
    c: int, h: int, w: int, seed: int
) -> None:
    f = _act(seed, (1, c, h, w)).double()
    g = torch.Generator().manual_seed(seed + 1)
    mask = (torch.rand(1, 1, h, w, generator=g) > 0.5).double()
    if float(mask.sum()) == 0:
        mask[..., 0, 0] = 1.0
    got = gram_matrix(f, mask)[0]
    picked = f[0].reshape(c, -1)[:, mask.reshape(-1) > 0]  # (C, positions under the mask)
    want = picked @ picked.T / picked.shape[1]
    assert torch.allclose(got, want)
    # What lies outside the mask does not matter.
    other = f.clone()
    other[mask.expand_as(f) == 0] = 7.0
    assert torch.allclose(gram_matrix(other, mask)[0], want)
    # Weights: a mask of 0.5 everywhere is the unmasked Gram matrix.
    assert torch.allclose(gram_matrix(f, torch.full_like(mask, 0.5)), gram_matrix(f))
    with pytest.raises(UserInputError, match="Gram mask must be"):
        gram_matrix(f, torch.ones(1, 1, h + 1, w))


def test_gram_match_with_a_region_mask() -> None:
    t = _act(7, (1, 3, 4, 4))
    image = torch.zeros(1, 3, 8, 8)  # the features are at half the image's resolution
    left = torch.zeros(8, 8)
    left[:, :4] = 1.0
    target = gram_matrix(t[..., :, :2])[0]  # the left half's Gram matrix
    inputs = Inputs({"l": t}, image)
    assert float(gram_match("l", target, mask=left)(inputs)) == pytest.approx(0.0, abs=1e-10)
    assert float(gram_match("l", target)(inputs)) > 0.01
    # A step (a tile) with none of the region adds nothing, with a gradient of zero.
    a = t.clone().requires_grad_()
    none = gram_match("l", target, mask=torch.zeros(8, 8))(Inputs({"l": a}, image))
    assert float(none.detach()) == 0.0
    (grad,) = torch.autograd.grad(none, a)
    assert float(grad.abs().sum()) == 0.0
    for bad, message in [
        (torch.full((8, 8), 2.0), "between 0 and 1"),
        (torch.zeros(2, 8, 8), "must be \\(H, W\\)"),
    ]:
        with pytest.raises(UserInputError, match=message):
            gram_match("l", target, mask=bad)


def test_a_window_cuts_whole_image_targets_to_its_tile() -> None:
    full = torch.arange(64.0).view(1, 1, 8, 8)
    win = Window(8, 8, dy=2, dx=4, y0=0, y1=4, x0=4, x1=8)
    rolled = torch.roll(full, shifts=(2, 4), dims=(-2, -1))
    assert win.crop(full).equal(rolled[..., 0:4, 4:8])
    half = torch.arange(16.0).view(1, 1, 4, 4)  # the same grid at stride 2
    assert win.crop(half).equal(torch.roll(half, shifts=(1, 2), dims=(-2, -1))[..., 0:2, 2:4])
    # feature_match compares a tile's features with the target's part under the tile.
    t = _act(8, (1, 2, 4, 4))
    tile_feats = win.crop(t)
    inputs = Inputs({"l": tile_feats}, torch.zeros(1, 3, 4, 4), window=win)
    assert float(feature_match("l", t)(inputs)) == pytest.approx(0.0, abs=1e-12)


def test_diversity_rewards_different_images() -> None:
    same = torch.ones(3, 2, 4, 4)
    varied = same.clone()
    varied[1, 0] = 0.0
    varied[2, 1] = 0.0
    d_same = float(diversity("l")(_inputs({"l": same})))
    d_varied = float(diversity("l")(_inputs({"l": varied})))
    assert d_same == pytest.approx(-1.0)  # every pair has cosine 1
    assert d_varied > d_same
    assert float(diversity("l")(_inputs({"l": same[:1]}))) == 0.0


def test_l1_l2_and_alpha_norm() -> None:
    img = torch.zeros(2, 3, 2, 2)
    img[0, 0, 0, 0] = 1.0  # model input (2x-1) is -1 everywhere but +1 there
    inputs = _inputs(image=img)
    assert float(l2()(inputs)) == pytest.approx(12.0)  # 12 values of ±1 per image
    assert float(l1()(inputs)) == pytest.approx(12.0)
    assert float(l2("pixel")(inputs)) == pytest.approx(0.25 * 12)  # (x − 0.5)²
    assert float(alpha_norm(6)(inputs)) == pytest.approx(1.0)
    with pytest.raises(UserInputError, match="space"):
        l2("rgb")


def test_total_variation_and_its_gradient_by_hand() -> None:
    x = torch.tensor([[0.0, 1.0], [3.0, 7.0]]).view(1, 1, 2, 2).expand(1, 3, 2, 2).clone()
    # right differences: (1-0), (7-3); down: (3-0), (7-1); the last column/row count 0.
    # per pixel: (0,0): 1² + 3² = 10; (0,1): 0 + 6² = 36; (1,0): 4² + 0 = 16; (1,1): 0.
    inputs = _inputs(image=x.requires_grad_())
    tv = total_variation(2.0)(inputs)
    assert float(tv.detach()) == pytest.approx((10 + 36 + 16) / 4)
    (g,) = torch.autograd.grad(tv, x)
    # d/dx of mean over 12 values: each channel the same; pixel (0,0) = a, (0,1) = b, ...
    a, b, c, d = 0.0, 1.0, 3.0, 7.0
    by_hand = (
        torch.tensor(
            [
                [-2 * (b - a) - 2 * (c - a), 2 * (b - a) - 2 * (d - b)],
                [2 * (c - a) - 2 * (d - c), 2 * (d - c) + 2 * (d - b)],
            ]
        )
        / 12
    )
    assert torch.allclose(g[0, 0], by_hand)
    assert float(total_variation(1.0)(inputs).detach()) == pytest.approx(
        (math.sqrt(10) + 6 + 4) / 4, rel=1e-5
    )


def test_blur_input_each_step_is_zero_for_a_flat_image() -> None:
    flat = _inputs(image=torch.full((1, 3, 8, 8), 0.3))
    assert float(blur_input_each_step()(flat)) == pytest.approx(0.0, abs=1e-10)
    noisy = _inputs(image=torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)))
    assert float(blur_input_each_step()(noisy)) > 0


def test_batch_selects_one_image() -> None:
    a = _act(7)
    inputs = _inputs({"l": a})
    assert float(channel("l", 0, batch=1)(inputs)) == pytest.approx(float(a[1, 0].mean()))
    with pytest.raises(UserInputError, match="batch index 5"):
        channel("l", 0, batch=5)(inputs)
