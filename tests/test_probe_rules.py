"""Guided backprop / deconv / linear ReLU rules: the definition, every ReLU spelling, release."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convscope import Probe
from convscope.errors import UserInputError
from convscope.testing import all_hooks


def _mode_depth() -> int:
    return int(torch._C._len_torch_function_stack())


class TwoLayer(nn.Module):
    def __init__(self, act: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 3, bias=False)
        self.fc2 = nn.Linear(3, 2, bias=False)
        self.act = act
        self.relu = nn.ReLU()
        self.relu_inplace = nn.ReLU(inplace=True)
        self.relu6 = nn.ReLU6()
        with torch.no_grad():
            self.fc1.weight.copy_(
                torch.tensor([[1.0, -2.0, 0.5, 1.0], [-1.0, 1.0, 2.0, -0.5], [0.5, 0.5, -1.0, 2.0]])
            )
            # mixed-sign gradients arrive at the hidden units
            self.fc2.weight.copy_(torch.tensor([[1.0, -1.0, 2.0], [-2.0, 1.0, 0.5]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
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


X = torch.tensor([[1.0, 0.5, 2.0, -1.0]])


def expected(net: TwoLayer, rule: str, hi: float | None = None) -> torch.Tensor:
    h = net.fc1(X).detach()  # (1, 3)
    g = net.fc2.weight[0].detach().unsqueeze(0)  # d out0 / d relu-output, (1, 3)
    if rule == "guided":
        active = h > 0
        if hi is not None:
            active &= h < hi
        g = g.clamp(min=0) * active
    elif rule == "deconv":
        g = g.clamp(min=0)
    return g @ net.fc1.weight.detach()  # (1, 4)


@pytest.mark.parametrize(
    "act", ["module", "inplace", "functional", "method", "relu6", "functional6"]
)
@pytest.mark.parametrize("rule", ["guided", "deconv", "linear"])
def test_rule_equals_its_definition(act: str, rule: str) -> None:
    net = TwoLayer(act)
    x = X.clone().requires_grad_()
    with Probe(net, [], relu_rule=rule):  # type: ignore[arg-type]
        net(x)[0, 0].backward()
    hi = 6.0 if act in ("relu6", "functional6") else None
    assert torch.allclose(x.grad, expected(net, rule, hi))  # type: ignore[arg-type]


def test_relu6_cuts_gradient_above_six() -> None:
    net = TwoLayer("relu6")
    x = (X * 10).requires_grad_()  # some hidden units exceed 6
    with Probe(net, [], relu_rule="guided"):
        net(x)[0, 0].backward()
    h = net.fc1(x).detach()
    g = net.fc2.weight[0].detach().clamp(min=0) * ((h > 0) & (h < 6))
    assert torch.allclose(x.grad, g @ net.fc1.weight.detach())  # type: ignore[arg-type]


def test_forward_values_are_unchanged() -> None:
    for act in ("module", "inplace", "functional", "relu6"):
        net = TwoLayer(act)
        plain = net(X.clone())
        with Probe(net, [], relu_rule="guided"):
            ruled = net(X.clone().requires_grad_())
        assert torch.allclose(plain, ruled)


def test_plain_gradient_is_back_after_the_block() -> None:
    net = TwoLayer("module")
    with Probe(net, [], relu_rule="guided"):
        pass
    x = X.clone().requires_grad_()
    net(x)[0, 0].backward()
    h = net.fc1(X).detach()
    plain = (net.fc2.weight[0].detach() * (h > 0)) @ net.fc1.weight.detach()
    assert torch.allclose(x.grad, plain)  # type: ignore[arg-type]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_rule_and_hooks_released_after_an_error(exc: BaseException) -> None:
    net = TwoLayer("functional")
    depth = _mode_depth()
    with pytest.raises(type(exc)), Probe(net, ["fc1"], relu_rule="guided", grads=True):
        assert _mode_depth() == depth + 1
        net(X.clone().requires_grad_())[0, 0].backward()
        raise exc
    assert _mode_depth() == depth
    assert all_hooks(net) == 0


def test_unknown_rule() -> None:
    with pytest.raises(UserInputError, match="guided, deconv, linear"):
        Probe(TwoLayer("module"), [], relu_rule="smooth")  # type: ignore[arg-type]


def test_hardtanh_that_is_not_relu_like_is_left_alone() -> None:
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Hardtanh(-1.0, 1.0))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
    x = torch.tensor([[0.5, 0.5]], requires_grad=True)
    with Probe(net, [], relu_rule="guided"):
        net(x).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([[1.0, -1.0]]))  # type: ignore[arg-type]
