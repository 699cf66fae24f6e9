"""The perceptual losses of texture and style against hand computations on tiny feature maps,
their normalization, blend weights, the multiscale schedule and Adam's carried state."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from convscope.errors import UserInputError
from convscope.models.base import ConvModel, Preprocess, WeightSource
from convscope.synthesize.objectives import Inputs, gram_matrix
from convscope.synthesize.octaves import resize_optimizer_state
from convscope.synthesize.perceptual import (
    StyleTarget,
    blend_weights,
    check_size,
    content_loss,
    min_side,
    perceptual,
    style_grams,
    style_loss,
    tv_levels,
)
from convscope.synthesize.recipes.style import multiscale_sizes, output_size

IDENTITY = Preprocess(resize=None, crop=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def _f(*values: float, shape: tuple[int, ...] = (1, 2, 1, 2)) -> Tensor:
    return torch.tensor(values, dtype=torch.float64).view(shape)


def _inputs(acts: dict[str, Tensor], image: Tensor | None = None) -> Inputs:
    img = torch.zeros(1, 3, 2, 2, dtype=torch.float64) if image is None else image
    return Inputs(acts, img)


def test_the_content_loss_by_hand() -> None:
    # Two channels at two positions: F0 = [[1, 2], [3, 4]], F = [[1, 0], [3, 5]].
    f0, f = _f(1, 2, 3, 4), _f(1, 0, 3, 5)
    # ||F − F0||² = 0 + 4 + 0 + 1 = 5; ||F0||² = 1 + 4 + 9 + 16 = 30.
    loss = content_loss({"a": f0})
    assert float(-(-loss)(_inputs({"a": f}))) == pytest.approx(5 / 30)
    # Two layers: the mean of their relative errors.
    g0, g = _f(2, 0, 0, 2), _f(0, 0, 0, 2)  # ||G−G0||² = 4, ||G0||² = 8
    two = content_loss({"a": f0, "b": g0})
    assert float(two(_inputs({"a": f, "b": g}))) == pytest.approx((5 / 30 + 4 / 8) / 2)


def test_the_style_loss_by_hand() -> None:
    # Target: features [[1, 1], [0, 2]] → A = F Fᵀ / 2 = [[1, 1], [1, 2]].
    a = torch.tensor([[[1.0, 1.0], [1.0, 2.0]]], dtype=torch.float64)
    fs = _f(1, 1, 0, 2)
    target = StyleTarget({"s": a})
    assert float(style_loss([target])(_inputs({"s": fs}))) == pytest.approx(0.0, abs=1e-12)
    # F = [[2, 0], [0, 0]] → G = [[2, 0], [0, 0]]; G − A = [[1, −1], [−1, −2]]: ||·||² = 7;
    # ||A||² = 1 + 1 + 1 + 4 = 7.
    f = _f(2, 0, 0, 0)
    assert float(style_loss([target])(_inputs({"s": f}))) == pytest.approx(1.0)
    # Weighted targets add.
    both = style_loss([StyleTarget({"s": a}, 0.25), StyleTarget({"s": a}, 0.75)])
    assert float(both(_inputs({"s": f}))) == pytest.approx(1.0)


def test_the_tv_term_by_hand() -> None:
    image = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    image[0, 0, 0, 0] = 1.0  # one red pixel at full level
    # Differences: one horizontal and one vertical of 255 levels; 12 values in the image.
    want = 2 * 255.0**2 / 12
    assert float(tv_levels()(_inputs({}, image))) == pytest.approx(want)


def test_the_perceptual_objective_weighs_and_labels_its_terms() -> None:
    f0 = _f(1, 2, 3, 4)
    a = torch.tensor([[[1.0, 1.0], [1.0, 2.0]]], dtype=torch.float64)
    objective = perceptual(
        content={"c": f0},
        styles=[StyleTarget({"s": a})],
        content_weight=5.0,
        style_weight=100.0,
        tv_weight=1e-3,
    )
    image = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    image[0, 0, 0, 0] = 1.0
    inputs = _inputs({"c": _f(1, 0, 3, 5), "s": _f(2, 0, 0, 0)}, image)
    value, losses = objective.evaluate(inputs)
    assert set(losses) == {"content", "style", "tv"}
    assert float(losses["content"]) == pytest.approx(5 * 5 / 30)
    assert float(losses["style"]) == pytest.approx(100 * 1.0)
    assert float(losses["tv"]) == pytest.approx(1e-3 * 2 * 255.0**2 / 12)
    assert float(-value) == pytest.approx(sum(float(v) for v in losses.values()))
    assert objective.layers == {"c", "s"}
    no_tv = perceptual(
        content={"c": f0}, styles=[], content_weight=1.0, style_weight=1.0, tv_weight=0.0
    )
    assert set(no_tv.evaluate(inputs)[1]) == {"content"}
    with pytest.raises(UserInputError, match="weight 0"):
        perceptual(content=None, styles=[], content_weight=1, style_weight=1, tv_weight=0)


@given(size=st.integers(1, 6), scale=st.floats(0.1, 10.0))
@settings(max_examples=30, deadline=None)
def test_the_losses_do_not_depend_on_the_feature_scale_or_size(size: int, scale: float) -> None:
    """The normalization: scaling the features (0–255 against 0–1 inputs) or tiling them
    (a larger image of the same texture) leaves the style loss unchanged."""
    g = torch.Generator().manual_seed(size)
    f = torch.rand(1, 3, 2, 2, generator=g, dtype=torch.float64)
    other = torch.rand(1, 3, 2, 2, generator=g, dtype=torch.float64)
    target = gram_matrix(other)
    base = float(style_loss([StyleTarget({"s": target})])(_inputs({"s": f})))
    scaled = style_loss([StyleTarget({"s": target * scale**2})])
    assert float(scaled(_inputs({"s": f * scale}))) == pytest.approx(base, rel=1e-9)
    tiled = f.repeat(1, 1, size, size)
    assert float(style_loss([StyleTarget({"s": target})])(_inputs({"s": tiled}))) == (
        pytest.approx(base, rel=1e-9)
    )
    c = content_loss({"c": other})
    assert float(content_loss({"c": other * scale})(_inputs({"c": f * scale}))) == (
        pytest.approx(float(c(_inputs({"c": f}))), rel=1e-9)
    )


def test_blend_weights() -> None:
    assert blend_weights(None, 4) == [0.25] * 4
    assert blend_weights([3, 7], 2) == pytest.approx([0.3, 0.7])
    assert blend_weights([1, 0], 2) == [1.0, 0.0]
    for bad, message in [
        ([1.0], "1 style blend weights for 2 style images"),
        ([1.0, -1.0], "0 or more"),
        ([0.0, 0.0], "at least one"),
        ([float("nan"), 1.0], "0 or more"),
    ]:
        with pytest.raises(UserInputError, match=message):
            blend_weights(bad, 2)


def test_blended_targets_are_the_weighted_gram_matrices() -> None:
    model = _identity_model()
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(1, 3, 4, 4, generator=g), torch.rand(1, 3, 6, 5, generator=g)
    ga = style_grams(model, [a], ["0"])["0"]
    gb = style_grams(model, [b], ["0"])["0"]
    blended = style_grams(model, [a, b], ["0"], [1, 3])["0"]
    assert torch.allclose(blended, 0.25 * ga + 0.75 * gb)
    assert torch.equal(style_grams(model, [a, b], ["0"], [1, 0])["0"], ga)


class _Strided(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 2, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.b = nn.Conv2d(2, 2, 3, padding=1)
        self.pool2 = nn.MaxPool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool2(self.b(self.pool(self.a(x))))  # type: ignore[no-any-return]


def _identity_model() -> ConvModel:
    conv = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
    return ConvModel("identity", nn.Sequential(conv), IDENTITY, WeightSource("user", "test"))


def test_the_smallest_side_a_layer_needs() -> None:
    model = ConvModel("strided", _Strided(), IDENTITY, WeightSource("user", "test"))
    assert min_side(model, ["a", "b", "pool2"]) == {"a": 1, "b": 2, "pool2": 4}
    check_size(model, ["pool2"], (4, 9), "style image")
    with pytest.raises(UserInputError, match="pool2 needs at least 4 px, but the style image"):
        check_size(model, ["a", "pool2"], (3, 9), "style image")


def test_the_multiscale_schedule() -> None:
    assert multiscale_sizes((384, 512)) == [(192, 256), (384, 512)]
    assert multiscale_sizes((2048, 2048)) == [(256, 256), (512, 512), (1024, 1024), (2048, 2048)]
    assert multiscale_sizes((300, 200)) == [(300, 200)]  # 150 would be below 256
    assert multiscale_sizes((700, 700)) == [(350, 350), (700, 700)]
    assert multiscale_sizes((96, 128), start=32) == [(24, 32), (48, 64), (96, 128)]
    assert output_size((300, 400), 200) == (150, 200)
    assert output_size((400, 300), 200) == (200, 150)


def test_adams_state_is_carried_to_the_next_scale() -> None:
    x = torch.zeros(1, 3, 4, 4, requires_grad=True)
    opt = torch.optim.Adam([x], lr=0.1)
    x.grad = torch.ones_like(x)
    opt.step()
    state = opt.state_dict()
    carried = resize_optimizer_state(state, (8, 8))
    entry = carried["state"][0]
    assert entry["exp_avg"].shape == (1, 3, 8, 8)
    # Four times the pixels: a pixel's gradient is a quarter, its square a sixteenth.
    assert torch.allclose(entry["exp_avg"], state["state"][0]["exp_avg"].mean() / 4 * torch.ones(1))
    assert torch.allclose(
        entry["exp_avg_sq"], state["state"][0]["exp_avg_sq"].mean() / 16 * torch.ones(1)
    )
    assert float(entry["step"]) == float(state["state"][0]["step"])
    assert state["state"][0]["exp_avg"].shape == (1, 3, 4, 4)  # the caller's is unchanged
    bigger = torch.zeros(1, 3, 8, 8, requires_grad=True)
    nxt = torch.optim.Adam([bigger], lr=0.1)
    nxt.load_state_dict(carried)
    sgd = torch.optim.SGD([x], lr=0.1, momentum=0.9)
    x.grad = torch.ones_like(x)
    sgd.step()
    with pytest.raises(UserInputError, match="only Adam"):
        resize_optimizer_state(sgd.state_dict(), (8, 8))
