"""Analytic receptive fields equal gradient-measured ones, layer by layer.

Measurement: a copy of the model with every conv weight set to 1/fan-in (all positive), batch
norm made the identity, ReLU backward made linear (the probe's "linear" rule) and max pools
replaced by average pools of the same geometry. Then the gradient of one unit with respect to
the input is positive exactly on its receptive field (clipped to the image)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from convscope import Probe, load_model
from convscope.probe import ReceptiveField, receptive_fields
from convscope.testing import tiny_model


class _MaxToAvg(TorchFunctionMode):
    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = dict(kwargs or {})
        if getattr(func, "__name__", "") in ("max_pool2d", "_max_pool2d"):
            x, k = args[0], args[1]
            stride = args[2] if len(args) > 2 else kwargs.get("stride")
            padding = args[3] if len(args) > 3 else kwargs.get("padding", 0)
            assert (args[4] if len(args) > 4 else kwargs.get("dilation", 1)) in (1, (1, 1))
            return F.avg_pool2d(x, k, stride or k, padding)
        return func(*args, **kwargs)


def positive_copy(module: nn.Module) -> nn.Module:
    """A float64 copy whose convs all have one output channel and weights 1/fan-in, and whose
    batch norms are the identity. With constant positive weights every channel of the original
    would carry the same values, so collapsing them keeps the gradient's support exact while
    making the backward passes cheap."""
    m = copy.deepcopy(module).eval()
    for name, sub in list(m.named_modules()):
        if isinstance(sub, nn.Conv2d):
            in_ch = 3 if sub.in_channels == 3 and sub.groups == 1 else 1
            new: nn.Module = nn.Conv2d(
                in_ch,
                1,
                sub.kernel_size,  # type: ignore[arg-type]
                stride=sub.stride,  # type: ignore[arg-type]
                padding=sub.padding,  # type: ignore[arg-type]
                dilation=sub.dilation,  # type: ignore[arg-type]
                bias=False,
            )
            new.__class__ = type(sub)  # keep custom forwards such as TF-SAME padding
            with torch.no_grad():
                new.weight.fill_(1.0 / new.weight[0].numel())
        elif isinstance(sub, nn.BatchNorm2d):
            new = nn.Identity()
        else:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = m.get_submodule(parent_name) if parent_name else m
        setattr(parent, child, new)
    return m.double()


def clipped(rf: ReceptiveField, y: int, x: int, size: int) -> tuple[int, ...]:
    top, left, bottom, right = rf.box(y, x)
    return max(top, 0), max(left, 0), min(bottom, size), min(right, size)


def bounding_box(grad: torch.Tensor) -> tuple[int, ...]:
    mask = grad.abs().sum(0) > 0  # (H, W)
    rows = mask.any(1).nonzero().flatten()
    cols = mask.any(0).nonzero().flatten()
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def check_model(module: nn.Module, layers_: list[str], size: int) -> None:
    """One forward of 3 copies of the input; per layer, one backward in which copy i
    carries unit i (center, top-left corner, bottom-right corner)."""
    fields = receptive_fields(module, layers_, size)
    pos = positive_copy(module)
    inp = torch.ones(3, 3, size, size, dtype=torch.float64, requires_grad=True)
    probe = Probe(pos, layers_, detach=False, clone=False, relu_rule="linear", stop_early=True)
    with _MaxToAvg():
        probe.run(inp)
    for name in layers_:
        rf = fields[name]
        assert rf is not None, name
        act = probe.activations[name]  # (3, C, h, w)
        h, w = act.shape[-2:]
        units = [(h // 2, w // 2), (0, 0), (h - 1, w - 1)]
        score = sum(act[i, :, y, x].sum() for i, (y, x) in enumerate(units))
        (grad,) = torch.autograd.grad(score, inp, retain_graph=True)
        for i, (y, x) in enumerate(units):
            assert bounding_box(grad[i]) == clipped(rf, y, x, size), (name, y, x)


def conv_and_pool_layers(module: nn.Module) -> list[str]:
    kinds = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
    return [n for n, m in module.named_modules() if isinstance(m, kinds)]


def test_tiny() -> None:
    check_model(tiny_model().module, ["conv1", "pool1", "conv2"], 12)


def test_dilated_strided_padded_and_residual() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, stride=2, padding=1)
            self.b = nn.Conv2d(4, 4, 3, padding=2, dilation=2)
            self.c = nn.Conv2d(4, 4, 5, padding=2)
            self.pool = nn.MaxPool2d(3, 2, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.a(x)
            h = h + self.c(self.b(h))  # residual: the union of both paths
            return self.pool(F.pad(h, (0, 1, 0, 1)))  # type: ignore[no-any-return]

    net = Net()
    check_model(net, ["a", "b", "c", "pool"], 40)
    assert receptive_fields(net, ["c"], 40)["c"] == ReceptiveField((19, 19), (2, 2), (-9, -9))


@pytest.mark.weights
def test_vgg16_every_conv_and_pool() -> None:
    vgg = load_model("vgg16")
    names = conv_and_pool_layers(vgg.module)
    assert len(names) == 18
    rf = receptive_fields(vgg, ["conv5_3"], 224)["conv5_3"]
    assert rf is not None and rf.size == (196, 196) and rf.stride == (16, 16)
    check_model(vgg.module, names, 224)


@pytest.mark.weights
def test_efficientnet_lite0_every_conv() -> None:
    net = load_model("efficientnet_lite0")
    names = conv_and_pool_layers(net.module)
    assert len(names) >= 49  # stem, 16 blocks of expand/depthwise/project, head
    check_model(net.module, names, 224)


def test_smallnet_every_conv_and_pool() -> None:
    net = load_model("smallnet")
    names = conv_and_pool_layers(net.module)
    assert names == ["conv1", "pool1", "conv2", "pool2", "conv3"]
    check_model(net.module, names, 28)
