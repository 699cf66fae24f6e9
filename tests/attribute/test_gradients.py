"""Gradient, guided backprop and SmoothGrad against their definitions; the attribution
contract (shapes, no mutation, no hooks or modes left behind) for every method."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convscope.attribute import (
    METHODS,
    ClassTarget,
    NeuronTarget,
    Target,
    gradient_map,
    guided_gradients,
    guided_map,
    input_gradients,
    saliency,
    smoothgrad_map,
)
from convscope.errors import UnknownNameError, UserInputError
from convscope.models.base import ConvModel, Preprocess, WeightSource
from convscope.testing import all_hooks, same_state, state_copy, tiny_model

IDENTITY = Preprocess(resize=None, crop=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
H, W = 4, 5


def _mode_depth() -> int:
    return int(torch._C._len_torch_function_stack())


def linear_model(preprocess: Preprocess = IDENTITY) -> tuple[ConvModel, torch.Tensor]:
    """flatten → linear: the gradient of class k's logit is exactly W[k] (reshaped)."""
    torch.manual_seed(0)
    fc = nn.Linear(3 * H * W, 4)
    module = nn.Sequential(nn.Flatten(), fc)
    cm = ConvModel(
        "linear", module, preprocess, WeightSource("random"), classes=("a", "b", "c", "d")
    )
    return cm, fc.weight.detach().clone().view(4, 3, H, W)


def test_gradient_of_a_linear_model_is_its_weight() -> None:
    cm, weight = linear_model()
    images = torch.rand(2, 3, H, W)
    targets: list[Target] = [ClassTarget(1), ClassTarget(3)]
    signed = input_gradients(cm, images, targets)
    assert torch.allclose(signed, weight[[1, 3]])
    maps = gradient_map(cm, images, targets)
    assert maps.shape == (2, H, W) and maps.dtype == torch.float32
    assert torch.allclose(maps, weight[[1, 3]].abs().amax(dim=1))


def test_gradient_is_taken_through_normalize() -> None:
    std = (0.5, 0.25, 2.0)
    cm, weight = linear_model(Preprocess(resize=None, crop=None, mean=(0.1, 0.2, 0.3), std=std))
    signed = input_gradients(cm, torch.rand(1, 3, H, W), [ClassTarget(0)])
    expected = weight[0] / torch.tensor(std).view(3, 1, 1)  # chain rule through (x - m) / s
    assert torch.allclose(signed[0], expected)


def test_gradient_matches_autograd_on_tiny() -> None:
    cm = tiny_model()
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    cm.module.double()
    got = input_gradients(cm, x, [ClassTarget(1)])
    xx = x.clone().requires_grad_()
    (want,) = torch.autograd.grad(cm(xx)[0, 1], xx)
    assert torch.allclose(got.double(), want, atol=1e-6)


# ---- guided backprop ------------------------------------------------------------------------
# gradcheck does not apply to guided backprop: its ReLU rule changes the backward pass, so
# the result is not the gradient of any function. It is compared with its definition instead.


class TwoLayer(nn.Module):
    """flatten → fc1 → some ReLU spelling → fc2, with mixed-sign gradients at the hidden units."""

    def __init__(self, act: str) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(3)
        self.fc1 = nn.Linear(3 * H * W, 6, bias=False)
        self.fc2 = nn.Linear(6, 2, bias=False)
        self.act = act
        self.relu = nn.ReLU()
        self.relu_inplace = nn.ReLU(inplace=True)
        self.relu6 = nn.ReLU6()
        with torch.no_grad():
            self.fc1.weight.copy_(torch.randn(6, 3 * H * W, generator=gen) * 0.5)
            self.fc2.weight.copy_(torch.tensor([[1.0, -1.0, 2.0, -0.5, 1.5, -2.0], [1.0] * 6]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x.flatten(1))
        if self.act == "module":
            h = self.relu(h)
        elif self.act == "inplace":
            h = self.relu_inplace(h)
        elif self.act == "functional":
            h = F.relu(h)
        elif self.act == "method":
            h = h.relu()
        elif self.act == "relu6":
            h = self.relu6(h)
        elif self.act == "functional6":
            h = F.relu6(h)
        return self.fc2(h)  # type: ignore[no-any-return]


def _two_layer(act: str) -> tuple[ConvModel, TwoLayer]:
    net = TwoLayer(act)
    return ConvModel("two", net, IDENTITY, WeightSource("random"), classes=("p", "q")), net


def _expected_guided(net: TwoLayer, x: torch.Tensor, hi: float | None) -> torch.Tensor:
    h = net.fc1(x.flatten(1)).detach()  # (1, 6)
    g = net.fc2.weight[0].detach().unsqueeze(0)  # d logit0 / d relu output
    active = h > 0
    if hi is not None:
        active &= h < hi
    out: torch.Tensor = (g.clamp(min=0) * active) @ net.fc1.weight.detach()
    return out.view(1, 3, H, W)


@pytest.mark.parametrize(
    "act", ["module", "inplace", "functional", "method", "relu6", "functional6"]
)
def test_guided_equals_its_definition(act: str) -> None:
    cm, net = _two_layer(act)
    x = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(0)) * 2
    h = net.fc1(x.flatten(1)).detach()[0]
    g = net.fc2.weight[0].detach()
    # Every case is exercised: inactive units, active ones with gradients of both signs, and
    # one unit above 6 (cut by ReLU6 only).
    assert (h < 0).any() and (h > 6).any()
    assert ((h > 0) & (h < 6) & (g > 0)).any() and ((h > 0) & (h < 6) & (g < 0)).any()
    hi = 6.0 if "6" in act else None
    want = _expected_guided(net, x, hi)
    got = guided_gradients(cm, x, [ClassTarget(0)])
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(guided_map(cm, x, [ClassTarget(0)]), want.abs().amax(dim=1), atol=1e-6)
    # ... and it differs from the plain gradient, which also passes negative gradients.
    assert not torch.allclose(input_gradients(cm, x, [ClassTarget(0)]), want, atol=1e-6)


def test_guided_backprop_of_an_intermediate_neuron_on_tiny() -> None:
    # relu1 channel 0 is the 3x3 mean of red: its guided gradient is 1/9 on the red pixels
    # of the 3x3 window around the neuron (the neuron is positive), 0 elsewhere.
    cm = tiny_model()
    img = torch.rand(1, 3, 8, 8) * 0.5 + 0.25
    result = saliency(cm, img, method="guided", layer="relu1", channel=0, position=(2, 3))
    want = torch.zeros(1, 8, 8)
    want[0, 1:4, 2:5] = 1 / 9
    assert torch.allclose(result.maps, want, atol=1e-7)
    assert result.targets == [NeuronTarget("relu1", 0, (2, 3))]
    signed = guided_gradients(cm, img, result.targets)
    assert torch.all(signed[0, 1:] == 0)  # only red


# ---- SmoothGrad -----------------------------------------------------------------------------


def test_smoothgrad_with_one_noiseless_sample_is_the_gradient() -> None:
    cm = tiny_model()
    x = torch.rand(2, 3, 8, 8)
    targets: list[Target] = [ClassTarget(0), ClassTarget(2)]
    sg = smoothgrad_map(cm, x, targets, samples=1, noise=0.0)
    assert torch.allclose(sg, gradient_map(cm, x, targets))


def test_smoothgrad_is_the_mean_over_noisy_copies() -> None:
    cm = tiny_model()
    x = torch.rand(1, 3, 8, 8)
    targets: list[Target] = [ClassTarget(1)]
    got = smoothgrad_map(
        cm, x, targets, samples=3, noise=0.2, generator=torch.Generator().manual_seed(5)
    )
    gen = torch.Generator().manual_seed(5)
    copies = [x + 0.2 * torch.randn(3, 8, 8, generator=gen) for _ in range(3)]
    want = torch.stack([gradient_map(cm, c, targets)[0] for c in copies]).mean(dim=0)
    assert torch.allclose(got[0], want, atol=1e-6)


def test_smoothgrad_is_seeded_and_independent_of_batch_size() -> None:
    cm = tiny_model()
    x = torch.rand(2, 3, 6, 6)
    targets: list[Target] = [ClassTarget(0), ClassTarget(1)]

    def run(seed: int, batch_size: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return smoothgrad_map(
            cm, x, targets, samples=5, noise=0.3, generator=gen, batch_size=batch_size
        )

    a = run(1, 16)
    assert torch.equal(a, run(1, 16))
    assert torch.allclose(a, run(1, 3), atol=1e-7)
    assert not torch.allclose(a, run(2, 16))


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [({"samples": 0}, "samples"), ({"noise": -0.1}, "noise"), ({"batch_size": 0}, "batch_size")],
)
def test_smoothgrad_rejects_bad_options(kwargs: dict[str, Any], word: str) -> None:
    with pytest.raises(UserInputError, match=word):
        smoothgrad_map(tiny_model(), torch.rand(1, 3, 4, 4), [ClassTarget(0)], **kwargs)


# ---- the contract, for every method ---------------------------------------------------------

OPTIONS: dict[str, dict[str, Any]] = {
    "occlusion": {"window": 4, "stride": 2},
    "smoothgrad": {"samples": 2},
}


def _call(method: str) -> Callable[..., torch.Tensor]:
    fn = METHODS[method]
    return lambda cm, x, t: fn(cm, x, t, **OPTIONS.get(method, {}))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_contract_shape_and_no_side_effects(method: str) -> None:
    cm = tiny_model()
    before = state_copy(cm.module)
    depth = _mode_depth()
    x = torch.rand(2, 3, 8, 10)
    x_copy = x.clone()
    maps = _call(method)(cm, x, [ClassTarget(0), ClassTarget(1)])
    assert maps.shape == (2, 8, 10)
    assert maps.dtype == torch.float32 and maps.device.type == "cpu"
    assert torch.isfinite(maps).all() and (maps >= 0).all()
    assert torch.equal(x, x_copy)
    assert all_hooks(cm.module) == 0 and _mode_depth() == depth
    assert same_state(before, state_copy(cm.module))
    assert all(p.grad is None for p in cm.module.parameters())
    assert cm.module.training is False


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize(
    "target",
    [
        ClassTarget(7),
        ClassTarget(-1),
        NeuronTarget("relu2", 5),
        NeuronTarget("relu1", 0, (40, 0)),
        NeuronTarget("nope", 0),
    ],
    ids=["class-too-big", "class-negative", "channel", "position", "layer"],
)
def test_invalid_targets_raise_and_leave_nothing_behind(method: str, target: Target) -> None:
    cm = tiny_model()
    before = state_copy(cm.module)
    depth = _mode_depth()
    with pytest.raises(UserInputError) as info:
        _call(method)(cm, torch.rand(1, 3, 8, 8), [target])
    assert "\n" not in str(info.value)
    assert all_hooks(cm.module) == 0 and _mode_depth() == depth
    assert same_state(before, state_copy(cm.module))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_wrong_number_of_targets(method: str) -> None:
    with pytest.raises(UserInputError, match="2 targets for 1 images"):
        _call(method)(tiny_model(), torch.rand(1, 3, 8, 8), [ClassTarget(0)] * 2)


def test_images_from_inference_mode_are_fine() -> None:
    cm = tiny_model()
    with torch.inference_mode():
        x = torch.rand(1, 3, 6, 6)
    assert gradient_map(cm, x, [ClassTarget(0)]).shape == (1, 6, 6)
    with torch.no_grad():
        assert guided_map(cm, x, [ClassTarget(0)]).shape == (1, 6, 6)


# ---- saliency() ---------------------------------------------------------------------------


def test_saliency_resolves_names_and_the_top_prediction() -> None:
    cm = tiny_model()
    red = torch.zeros(3, 8, 8)
    red[0] = 1.0
    assert saliency(cm, red).targets == [ClassTarget(0)]  # "warm" is the top class
    assert saliency(cm, red, "cool").targets == [ClassTarget(1)]
    assert saliency(cm, red, "coo").targets == [ClassTarget(1)]  # fuzzy
    assert saliency(cm, red, 2).targets == [ClassTarget(2)]
    result = saliency(cm, [red, red], "warm", method="smoothgrad", samples=2)
    assert result.maps.shape == (2, 8, 8) and result.images.shape == (2, 3, 8, 8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"target": "wram"}, "did you mean 'warm'"),
        ({"target": 3}, "out of range"),
        ({"method": "gradiant"}, "did you mean 'gradient'"),
        ({"method": "gradient", "window": 3}, "takes no option 'window'"),
        ({"layer": "relu1"}, "--layer without --channel"),
        ({"layer": "relu1", "channel": 9}, "channel 9 is out of range 0..3"),
        ({"layer": "relu1", "channel": 0, "position": (9, 0)}, "outside layer relu1"),
        ({"layer": "relux", "channel": 0}, "Unknown layer 'relux'"),
        ({"channel": 0}, "--channel needs --layer"),
        ({"target": "warm", "layer": "relu1", "channel": 0}, "not both"),
    ],
)
def test_saliency_bad_input(kwargs: dict[str, Any], match: str) -> None:
    cm = tiny_model()
    with pytest.raises(UserInputError, match=match):
        saliency(cm, torch.rand(3, 8, 8), **kwargs)
    assert all_hooks(cm.module) == 0


def test_unknown_method_is_an_unknown_name() -> None:
    with pytest.raises(UnknownNameError):
        saliency(tiny_model(), torch.rand(3, 8, 8), method="lime")
