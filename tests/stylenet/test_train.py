"""Training a style network on the real VGG16, tiny: the style loss goes down for each of two
styles, the same seed gives the same network, and bad arguments are one sentence."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from convscope.data.samples import load_sample
from convscope.errors import UserInputError
from convscope.models import ConvModel, load_model
from convscope.stylenet import TransformerNet
from convscope.stylenet.train import train_stylenet
from convscope.synthesize.octaves import resize
from convscope.synthesize.perceptual import StyleTarget, current_losses, perceptual, style_grams
from convscope.testing import same_state, state_copy

pytestmark = pytest.mark.usefixtures("one_thread")

LAYERS = ["relu1_2", "relu2_2"]  # small and quick; the defaults go to relu4_3


@pytest.fixture(scope="module")
def vgg() -> ConvModel:
    return load_model("vgg16")


def _small(name: str, side: int = 64) -> torch.Tensor:
    x = load_sample(name)[None]
    return resize(x, (side, side)).clamp(0, 1)


def _style_loss(vgg: ConvModel, net: TransformerNet, style: torch.Tensor, k: int) -> float:
    x = torch.cat([_small("coffee"), _small("chelsea")])
    with torch.no_grad():
        y = net(x, style=k)
    objective = perceptual(
        content=None,
        styles=[StyleTarget(style_grams(vgg, [style], LAYERS))],
        content_weight=0.0,
        style_weight=1.0,
        tv_weight=0.0,
    )
    return current_losses(vgg, y, objective)["style"]


def test_a_tiny_run_lowers_the_style_loss_of_both_styles(vgg: ConvModel) -> None:
    styles = [_small("brick"), _small("immunohistochemistry")]
    contents = [load_sample(n) for n in ("astronaut", "rocket", "hubble", "coins")]
    before = state_copy(vgg.module)
    options: dict[str, Any] = {
        "size": 64, "batch": 2, "lr": 1e-2, "style_layers": LAYERS, "content_layer": "relu2_2",
        "norm": "conditional", "precision": "fp32",
    }  # fmt: skip
    first = train_stylenet(vgg, styles, contents, steps=1, **options)
    result = train_stylenet(vgg, styles, contents, steps=20, **options)
    assert same_state(before, state_copy(vgg.module))
    assert all(p.grad is None for p in vgg.module.parameters())
    assert len(result.history) == 20 and {h["style_index"] for h in result.history} == {0.0, 1.0}
    for k, style in enumerate(styles):
        start = _style_loss(vgg, first.net, style, k)
        end = _style_loss(vgg, result.net, style, k)
        assert end < 0.5 * start, (k, start, end)
    again = train_stylenet(vgg, styles, contents, steps=20, **options)
    pairs = zip(result.net.state_dict().values(), again.net.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)  # the same seed, the same network
    assert result.config["styles"] == 2 and result.config["norm"] == "conditional"


def test_bad_arguments_are_one_sentence(vgg: ConvModel) -> None:
    s, c = [_small("brick")], [_small("coffee")]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"styles": []}, "at least one style"),
        ({"contents": []}, "no content images"),
        ({"styles": s * 2}, "2 styles need --norm conditional"),
        ({"size": 16}, "--size must be a whole number of at least 32"),
        ({"lr": 0.0}, "--lr must be a number above 0"),
        ({"style_weight": float("inf")}, "--style-weight"),
        ({"style_layers": ["relu9_9"]}, "relu9_9"),
        ({"precision": "fp8"}, "--precision"),
    ]
    for change, message in cases:
        kwargs: dict[str, Any] = {"styles": s, "contents": c, "steps": 1, "size": 32, **change}
        with pytest.raises(UserInputError, match=message):
            train_stylenet(vgg, **kwargs)
