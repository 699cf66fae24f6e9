"""Average pooling in place of max pooling, on a copy."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convscope.errors import UserInputError
from convscope.models.base import ConvModel, Preprocess, WeightSource
from convscope.models.pooling import with_pooling
from convscope.testing import same_state, state_copy

IDENTITY = Preprocess(resize=None, crop=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def _model() -> ConvModel:
    net = nn.Sequential(
        nn.Conv2d(3, 2, 3, padding=1),
        nn.MaxPool2d(2, 2),
        nn.Sequential(nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)),
    )
    return ConvModel("net", net, IDENTITY, WeightSource("user", "test"), aliases={"p": "1"})


def test_avg_pooling_replaces_every_max_pool_on_a_copy() -> None:
    model = _model()
    before = state_copy(model.module)
    avg = with_pooling(model, "avg")
    kinds = [type(m).__name__ for m in avg.module.modules()]
    assert "MaxPool2d" not in kinds and kinds.count("AvgPool2d") == 2
    inner = avg.module[2][1]
    assert isinstance(inner, nn.AvgPool2d)
    assert (inner.kernel_size, inner.stride, inner.padding, inner.ceil_mode) == (3, 2, 1, True)
    # The same names, weights and aliases; the caller's model is untouched.
    names = [n for n, _ in model.module.named_modules()]
    assert [n for n, _ in avg.module.named_modules()] == names
    assert avg.resolve("p") == "1"
    assert same_state(before, state_copy(model.module))
    assert isinstance(model.module[1], nn.MaxPool2d)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        conv = model.module[0](x)
        assert torch.allclose(avg.module[1](conv), nn.functional.avg_pool2d(conv, 2))


def test_max_pooling_is_the_model_itself() -> None:
    model = _model()
    assert with_pooling(model, "max") is model
    with pytest.raises(UserInputError, match="pooling must be max or avg"):
        with_pooling(model, "min")
