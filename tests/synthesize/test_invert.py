"""Feature inversion: PSNR and feature error, the per-layer runs and their priors, the panel,
seeds, bad arguments before any step, and (on VGG16's weights) the lecture's point: an early
layer gives the image back better than a late one."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from convscope.errors import UnknownNameError, UserInputError
from convscope.events import Progress
from convscope.models import ConvModel
from convscope.probe import capture
from convscope.synthesize.octaves import resize
from convscope.synthesize.recipes.invert import (
    feature_error,
    inversion_panel,
    invert,
    plan_invert,
    psnr,
)
from convscope.testing import all_hooks, same_state, state_copy

pytestmark = pytest.mark.usefixtures("one_thread")


def _image(size: int, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, max(2, size // 4), max(2, size // 4), generator=g)
    return resize(small, (size, size)).clamp(0, 1)


def test_psnr_and_feature_error() -> None:
    x = torch.full((1, 3, 4, 4), 0.5)
    assert psnr(x, x) == pytest.approx(100.0)
    assert psnr(x + 0.1, x) == pytest.approx(20.0, abs=1e-4)  # MSE 0.01
    want = torch.tensor([3.0, 4.0])
    assert feature_error(torch.tensor([3.0, 4.0]), want) == 0.0
    assert feature_error(torch.zeros(2), want) == pytest.approx(1.0)
    assert feature_error(torch.tensor([6.0, 8.0]), want) == pytest.approx(1.0)


def test_each_layer_is_inverted_and_measured(tiny: ConvModel) -> None:
    before = state_copy(tiny.module)
    image = _image(16)
    events: list[Progress] = []
    result = invert(tiny, image, ["relu1", "act"], steps=30, on_progress=events.append)
    assert [r.layer for r in result.layers] == ["relu1", "act"]
    assert torch.equal(result.original, image[0])  # tiny's view of an image is the image
    plan = plan_invert(tiny, image, ["relu1", "act"])
    for r, phi0 in zip(result.layers, plan.targets, strict=True):
        assert r.image.shape == (3, 16, 16) and r.steps == 30
        assert float(r.image.min()) >= 0 and float(r.image.max()) <= 1
        assert r.psnr == pytest.approx(psnr(r.image, image[0]))
        phi = capture(tiny, tiny.preprocess.normalize(r.image[None]), [r.layer])[r.layer]
        assert r.feature_error == pytest.approx(feature_error(phi, phi0))
        start = plan.runs[0].param().detach()
        phi_start = capture(tiny, tiny.preprocess.normalize(start), [r.layer])[r.layer]
        assert r.feature_error < 0.5 * feature_error(phi_start, phi0)
        assert set(r.losses) == {
            f"feature_match({r.layer!r})",
            "alpha_norm(6.0)",
            "total_variation(beta=2.0)",
        }
    # λV grows with the stride of the layer's units (relu1: 1, act: 2).
    assert [r.tv_weight for r in result.layers] == [0.0025, 0.005]
    assert {e.task for e in events} == {"invert relu1", "invert act"}
    report = result.report()
    assert report["model"] == "tiny" and report["size"] == [16, 16]
    assert [row["layer"] for row in report["layers"]] == ["relu1", "act"]
    assert all(math.isfinite(row["psnr_db"]) for row in report["layers"])
    assert all_hooks(tiny.module) == 0 and same_state(before, state_copy(tiny.module))
    assert all(p.requires_grad for p in tiny.module.parameters())


def test_every_layer_starts_from_the_same_random_image(tiny: ConvModel) -> None:
    plan = plan_invert(tiny, _image(16), ["relu1", "act"], seed=2)
    a, b = (run.param().detach() for run in plan.runs)
    assert torch.equal(a, b)
    other = plan_invert(tiny, _image(16), ["relu1"], seed=3).runs[0].param().detach()
    assert not torch.equal(a, other)


def test_one_tv_weight_for_every_layer(tiny: ConvModel) -> None:
    plan = plan_invert(tiny, _image(16), ["relu1", "act"], tv=0.1)
    assert plan.tv_weights == [0.1, 0.1]


def test_the_size_option_inverts_a_centre_crop(tiny: ConvModel) -> None:
    image = torch.rand(1, 3, 30, 40)
    plan = plan_invert(tiny, image, ["act"], size=20)
    assert plan.image.shape == (1, 3, 20, 20)


def test_the_same_seed_gives_the_same_reconstructions(tiny: ConvModel) -> None:
    a = invert(tiny, _image(16), ["act"], steps=5, seed=1).layers[0].image
    b = invert(tiny, _image(16), ["act"], steps=5, seed=1).layers[0].image
    c = invert(tiny, _image(16), ["act"], steps=5, seed=2).layers[0].image
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_the_panel_shows_the_original_then_each_layer(tiny: ConvModel) -> None:
    result = invert(tiny, _image(16), ["relu1", "act"], steps=3)
    panel = inversion_panel(result)
    # three 192 px tiles in a row (small images are shown at least 192 px wide), a title bar
    assert panel.width == 3 * 192 + 4 * 4 and panel.height > 192 + 22


BAD = [
    ({"layers": []}, UserInputError, "--layers names no layer"),
    ({"layers": ["conv9"]}, UnknownNameError, "Unknown layer 'conv9'"),
    ({"steps": 0}, UserInputError, "--steps must be at least 1"),
    ({"lr": 0.0}, UserInputError, "--lr must be a positive number"),
    ({"tv": -1.0}, UserInputError, "--tv must be 0 or more"),
    ({"alpha": float("nan")}, UserInputError, "--alpha must be 0 or more"),
    ({"size": 8}, UserInputError, "--size must be at least 16"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD)
def test_bad_arguments_fail_before_any_step(
    tiny: ConvModel, kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    events: list[Progress] = []
    options: dict[str, object] = {"layers": ["act"], **kwargs}
    layers = options.pop("layers")
    with pytest.raises(error, match=message):
        invert(tiny, _image(16), layers, on_progress=events.append, **options)  # type: ignore[arg-type]
    assert events == [] and all_hooks(tiny.module) == 0


@pytest.mark.weights
def test_an_early_vgg16_layer_gives_the_image_back_better_than_a_late_one() -> None:
    from convscope.data.samples import load_sample
    from convscope.models import load_model

    vgg = load_model("vgg16")
    result = invert(vgg, load_sample("cat"), ["relu2_2", "relu5_3"], size=80, steps=40)
    early, late = result.layers
    assert early.psnr > late.psnr + 5
    assert early.psnr > 25
