"""BatchNorm folding (models/fuse.py) and the fx graph it works on (models/graph.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from convscope.models.fuse import fold_batchnorms, fold_into
from convscope.models.graph import Traced, close


def _bn(channels: int, seed: int) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(channels, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(channels, generator=g))
        bn.running_mean.copy_(torch.randn(channels, generator=g))  # type: ignore[union-attr]
        bn.running_var.copy_(torch.rand(channels, generator=g) + 0.1)  # type: ignore[union-attr]
    return bn.eval()


class ConvBN(nn.Module):
    """conv → bn → relu → conv (with bias) → bn, plus a branch that reads conv_b twice."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv_a = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn_a = _bn(4, 1)
        self.relu = nn.ReLU()
        self.conv_b = nn.Conv2d(4, 5, 3, stride=2, padding=1)
        self.bn_b = _bn(5, 2)
        self.conv_c = nn.Conv2d(5, 5, 1)
        self.bn_c = _bn(5, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn_a(self.conv_a(x)))
        x = self.bn_b(self.conv_b(x))
        y = self.conv_c(x)
        return self.bn_c(y) + y  # conv_c has two users: its BN cannot be folded


def test_folding_keeps_the_output_and_replaces_the_batchnorms() -> None:
    net = ConvBN().eval()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = net(x)
        folded = copy.deepcopy(net)
        assert fold_batchnorms(folded) == 2
        got = folded(x)
    assert isinstance(folded.bn_a, nn.Identity) and isinstance(folded.bn_b, nn.Identity)
    assert isinstance(folded.bn_c, nn.BatchNorm2d)  # its conv's output is read twice
    assert folded.conv_a.bias is not None  # a bias appears where there was none
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    # The original is untouched: folding works in place on what it is given.
    assert isinstance(net.bn_a, nn.BatchNorm2d) and net.conv_a.bias is None


def test_training_mode_batchnorms_are_left_alone() -> None:
    net = ConvBN().eval()
    net.bn_a.train()
    assert fold_batchnorms(net) == 1  # only bn_b
    assert isinstance(net.bn_a, nn.BatchNorm2d)


class NotAConv(nn.Conv2d):
    """A Conv2d subclass whose forward ignores its weight: folding into it must be refused."""

    def forward(self, x: Tensor) -> Tensor:
        return x[:, : self.out_channels] * 2.0


def test_a_conv_whose_forward_is_not_a_conv_is_not_folded_into() -> None:
    conv = NotAConv(4, 4, 3, padding=1)
    bn = _bn(4, 5)
    before = conv.weight.detach().clone()
    assert fold_into(conv, bn) is False
    assert torch.equal(conv.weight, before) and conv.bias is not None


def test_untraceable_modules_are_left_alone() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.bn = _bn(3, 6)

        def forward(self, x: Tensor) -> Tensor:
            if float(x.mean()) > 0:  # data-dependent control flow: fx cannot trace it
                return self.bn(self.conv(x))
            return x

    net = Branchy().eval()
    assert Traced.trace(net) is None
    assert fold_batchnorms(net) == 0
    assert isinstance(net.bn, nn.BatchNorm2d)


def test_the_traced_graph_runs_like_the_module() -> None:
    net = ConvBN().eval()
    traced = Traced.trace(net)
    assert traced is not None
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        assert traced.faithful(x, net)
        env = {traced.nodes[0]: x}
        for node in traced.nodes[1:]:
            env[node] = traced.run(node, env)
        assert torch.allclose(env[traced.nodes[-1]], net(x))
    names = [n.name for n in traced.nodes]
    assert names[:3] == ["x", "conv_a", "bn_a"]


@pytest.mark.parametrize(
    ("got", "want", "expected"),
    [
        (torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0 + 1e-6]), True),
        (torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.1]), False),
        (torch.zeros(2), torch.zeros(3), False),
        (torch.zeros(0), torch.zeros(0), True),
    ],
)
def test_close_is_relative_to_the_largest_value(got: Tensor, want: Tensor, expected: bool) -> None:
    assert close(got, want) is expected
