from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from convscope import Probe, UnknownNameError, capture, layers
from convscope.errors import UserInputError
from convscope.models import ConvModel
from convscope.testing import all_hooks, same_state, state_copy


def constant_image(r: float, g: float, b: float, size: int = 8) -> torch.Tensor:
    return (
        torch.tensor([r, g, b], dtype=torch.float32)
        .view(1, 3, 1, 1)
        .expand(1, 3, size, size)
        .clone()
    )


def test_activations_are_the_hand_computed_values(tiny: ConvModel) -> None:
    x = constant_image(0.5, 0.25, 0.75)
    with Probe(tiny, ["conv1", "relu1", "act"]) as p:
        tiny(x)
    conv1 = p.activations["conv1"][0]  # (4, 8, 8)
    inner = conv1[:, 1:-1, 1:-1]
    for ch, value in enumerate([0.5, 0.25, 0.75, -0.5]):
        assert torch.allclose(inner[ch], torch.full_like(inner[ch], value), atol=1e-6)
    # at the corner only 4 of 9 taps see the image (zero padding)
    assert conv1[0, 0, 0].item() == pytest.approx(0.5 * 4 / 9, abs=1e-6)
    assert torch.all(p.activations["relu1"][0, 3] == 0)
    # relu2 (alias "act") channel 0 = r + g after the max pool, interior value
    assert p.activations["act"][0, 0, 1, 1].item() == pytest.approx(0.75, abs=1e-6)
    assert p.activations["act"][0, 1, 1, 1].item() == pytest.approx(0.75, abs=1e-6)


def test_results_are_keyed_by_the_names_given(tiny: ConvModel) -> None:
    acts = capture(tiny, constant_image(1, 0, 0), ["features", "conv2"])
    assert set(acts) == {"features", "conv2"}
    assert torch.equal(acts["features"], acts["conv2"])


def test_unknown_layer_names_the_closest(tiny: ConvModel) -> None:
    with pytest.raises(UnknownNameError, match="conv1") as err:
        Probe(tiny, ["conv3"])
    assert "did you mean" in str(err.value)
    vgg_like = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(UnknownNameError, match="'0'"):
        Probe(vgg_like, ["00"])


def test_a_bad_name_leaves_no_hook(tiny: ConvModel) -> None:
    with pytest.raises(UnknownNameError):
        Probe(tiny, ["conv1", "nope"]).__enter__()
    assert all_hooks(tiny.module) == 0


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_hooks_released_after_an_exception(tiny: ConvModel, exc: BaseException) -> None:
    before = state_copy(tiny.module)
    with pytest.raises(type(exc)), Probe(tiny, ["conv1", "relu2", "fc"], grads=True):
        assert all_hooks(tiny.module) == 3
        out = tiny(constant_image(1, 1, 1).requires_grad_())
        out.sum().backward()
        raise exc
    assert all_hooks(tiny.module) == 0
    assert same_state(before, state_copy(tiny.module))


def test_hooks_released_when_the_forward_itself_fails(tiny: ConvModel) -> None:
    with pytest.raises(RuntimeError), Probe(tiny, ["conv1"]):
        tiny(torch.zeros(1, 5, 8, 8))  # wrong channel count
    assert all_hooks(tiny.module) == 0


def test_gradients_match_autograd(tiny: ConvModel) -> None:
    x = torch.rand(2, 3, 8, 8)
    with Probe(tiny, ["relu1", "conv2"], grads=True, detach=False) as p:
        logits = tiny(x)
        a = p.activations["relu1"]
        expected = torch.autograd.grad(logits[:, 1].sum(), a, retain_graph=True)[0]
        logits[:, 1].sum().backward()
    assert torch.allclose(p.gradient("relu1"), expected)
    # d logit1 / d conv2 channel 1 = 1/(4*4) where relu2 is active
    g = p.gradient("conv2")
    assert torch.all(g[:, 0] == 0)


def test_missing_gradient_is_explained(tiny: ConvModel) -> None:
    with Probe(tiny, ["conv1"]) as p:
        tiny(constant_image(1, 1, 1))
    with pytest.raises(UserInputError, match="grads=True"):
        p.gradient("conv1")


def test_clone_protects_against_in_place_ops() -> None:
    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(inplace=True))
    with torch.no_grad():
        net[0].weight.fill_(-1.0)
        net[0].bias.zero_()
    with Probe(net, ["0"]) as p:
        net(torch.ones(1, 3, 2, 2))
    assert torch.all(p.activations["0"] == -3.0)


def test_stop_early_skips_the_rest(tiny: ConvModel) -> None:
    seen: list[str] = []
    tiny.module.fc.register_forward_pre_hook(lambda *_: seen.append("fc"))
    try:
        probe = Probe(tiny, ["conv1"], stop_early=True)
        assert probe.run(constant_image(1, 1, 1)) is None
        assert "conv1" in probe.activations and seen == []
    finally:
        tiny.module.fc._forward_pre_hooks.clear()


def test_module_called_twice_keeps_last_output() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.scale(self.scale(x) + 1)

    with Probe(Twice(), ["scale"]) as p:
        p.module(torch.zeros(1))
    assert p.activations["scale"].item() == 1.0


def test_layers_lists_shapes_and_aliases(tiny: ConvModel) -> None:
    rows = {r.name: r for r in layers(tiny, 8)}
    assert rows["conv1"].shape == (1, 4, 8, 8)
    assert rows["pool1"].shape == (1, 4, 4, 4)
    assert rows["fc"].shape == (1, 3)
    assert rows["relu2"].alias == "act"
    assert rows["conv1"].params == 4 * 3 * 9 + 4
    assert all_hooks(tiny.module) == 0


def test_layers_reports_a_model_that_cannot_run(tiny: ConvModel) -> None:
    with pytest.raises(UserInputError, match="cannot run"):
        layers(nn.Sequential(nn.Conv2d(3, 1, 5), nn.Flatten(), nn.Linear(16, 1)), 10)


@settings(max_examples=25, deadline=None)
@given(
    size=st.integers(min_value=2, max_value=12),
    batch=st.integers(min_value=1, max_value=3),
    names=st.lists(
        st.sampled_from(["conv1", "relu1", "pool1", "conv2", "act", "fc"]),
        min_size=1,
        max_size=4,
        unique=True,
    ),
)
def test_captured_equals_a_manual_forward(size: int, batch: int, names: list[str]) -> None:
    from convscope.testing import tiny_model

    cm = tiny_model()
    net = cm.module
    x = torch.rand(batch, 3, size, size)
    acts = capture(cm, x, names)
    manual = {}
    h = net.conv1(x)
    manual["conv1"] = h
    h = net.relu1(h)
    manual["relu1"] = h
    h = net.pool1(h)
    manual["pool1"] = h
    h = net.conv2(h)
    manual["conv2"] = h
    h = net.relu2(h)
    manual["act"] = h
    manual["fc"] = net.fc(net.flatten(net.gap(h)))
    for n in names:
        assert torch.allclose(acts[n], manual[n].detach())
    assert all_hooks(net) == 0


def test_many_forwards_with_gradients_keep_a_bounded_number_of_hooks(tiny: ConvModel) -> None:
    """A synthesis loop runs thousands of forwards and backwards inside one probe: the
    gradient hooks of each forward replace the previous ones instead of piling up, and the
    gradients are still the last backward's."""
    x = constant_image(0.3, 0.6, 0.9).requires_grad_()
    with Probe(tiny, ["relu1", "conv2"], grads=True, detach=False, clone="auto") as p:
        for _ in range(1000):
            p.run(x)
            p.activations["conv2"].sum().backward()
        assert len(p._handles) == 2 and len(p._tensor_handles) == 2
        got = p.gradient("relu1")
        p.run(x)
        want = torch.autograd.grad(p.activations["conv2"].sum(), p.activations["relu1"])[0]
    assert torch.allclose(got, want)
    assert all_hooks(tiny.module) == 0


class InPlaceAfter(nn.Module):
    """conv → in-place ReLU: the conv's output is changed after it was captured."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.relu = nn.ReLU(inplace=True)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[1.0, 0, 0], [-1.0, 0, 0]]).view(2, 3, 1, 1))
            self.conv.bias.zero_()  # type: ignore[union-attr]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x))  # type: ignore[no-any-return]


def test_auto_clone_copies_only_when_the_model_changes_a_captured_value() -> None:
    x = constant_image(0.5, 0.0, 0.0)
    net = InPlaceAfter()
    with Probe(net, ["conv"], clone="auto") as p:
        p.run(x)
        # The in-place ReLU zeroed the negative channel after capture: detected, and the
        # forward was run again with a copy, so the captured value is the conv's own.
        assert p.clone is True
        assert float(p.activations["conv"][0, 1].min()) == pytest.approx(-0.5)
    plain = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU())
    with Probe(plain, ["0"], clone="auto") as p:
        p.run(x)
        assert p.clone == "auto" and p.changed_in_place() == []


def test_a_bad_clone_argument_is_one_sentence(tiny: ConvModel) -> None:
    with pytest.raises(UserInputError, match="clone must be"):
        Probe(tiny, ["conv1"], clone="sometimes")  # type: ignore[arg-type]
