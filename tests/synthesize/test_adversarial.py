"""The adversarial recipe: targeted and untargeted PGD that succeeds on the 8-bit image it
returns, within eps in whole levels, at the model's resize with its centre crop, stopping
early, leaving the model as it was; bad arguments; and, on real weights, saved PNGs that
reload as the target."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from convscope.data.images import load_image, save_png
from convscope.errors import UserInputError
from convscope.models import ConvModel
from convscope.models.base import Preprocess
from convscope.synthesize import SynthesisProgress
from convscope.synthesize.recipes.adversarial import (
    adversarial,
    adversarial_panel,
    attack_image,
    plan_adversarial,
)
from convscope.testing import all_hooks, same_state, state_copy

pytestmark = pytest.mark.usefixtures("one_thread")


def near_boundary(h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    """An 8-bit image tiny calls "warm" by a hair over "cool" (r + g = 0.5 against b = 0.49),
    with a little noise so that it is not flat."""
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor([0.25, 0.25, 0.49]).view(3, 1, 1).expand(3, h, w)
    noisy = (base + 0.02 * torch.randn(3, h, w, generator=g)).clamp(0, 1)
    return (noisy * 255).round() / 255


def levels(x: torch.Tensor) -> torch.Tensor:
    """8-bit levels of an image on the grid, as integers; the grid is checked exactly: every
    value is k/255 in float32, as a PNG loads (`load_image`)."""
    k = (x.double() * 255).round()
    assert x.dtype == torch.float32 and torch.equal(x, k.float() / 255), "not on the 8-bit grid"
    return k.long()


@pytest.mark.parametrize("eps", [2 / 255, 0.01])  # a whole number of levels, and 2.55 levels
def test_a_targeted_attack_reaches_the_target_within_eps(tiny: ConvModel, eps: float) -> None:
    image = near_boundary()
    assert tiny.classify(image)[0][0].name == "warm"
    r = adversarial(tiny, image, target="cool", eps=eps, steps=50)
    assert r.success and r.target == 1 and r.source == 0
    assert r.after[0].name == "cool" and r.before[0].name == "warm"
    assert tiny.classify(r.image)[0][0].name == "cool"  # the public path agrees
    diff = (levels(r.image) - levels(r.original)).abs()
    assert int(diff.max()) <= math.floor(eps * 255 + 1e-6) == 2
    assert int(diff.max()) == r.linf_levels and r.linf <= eps
    assert r.l2 == pytest.approx(float((r.image - r.original).double().norm()))
    assert r.l2_levels == pytest.approx(r.l2 * 255)
    assert r.image.shape == image.shape and torch.equal(r.original, image)


def test_the_saved_png_is_the_image_the_attack_checked(tiny: ConvModel, tmp_path: Path) -> None:
    r = adversarial(tiny, near_boundary(), target="cool")
    save_png(r.image, tmp_path / "adv.png")
    again = load_image(tmp_path / "adv.png")
    assert torch.equal(again, r.image)  # bit for bit
    assert tiny.classify(again)[0][0].name == "cool"


def test_it_stops_as_soon_as_the_target_is_reached(tiny: ConvModel) -> None:
    events: list[SynthesisProgress] = []
    r = adversarial(tiny, near_boundary(), target="cool", steps=50, on_progress=events.append)
    assert r.success and 1 < r.steps < 50 and r.max_steps == 50
    assert len(r.history) == r.steps and events[-1].done == r.steps
    short = adversarial(tiny, near_boundary(), target="cool", steps=r.steps - 1)
    assert not short.success and short.steps == r.steps - 1  # one step fewer is not enough
    assert short.after[0].name == "warm"


def test_untargeted_moves_the_top_class(tiny: ConvModel) -> None:
    r = adversarial(tiny, near_boundary(seed=1), untargeted=True, steps=50)
    assert r.success and r.target is None and r.before[0].name == "warm"
    assert r.after[0].name != "warm" and tiny.classify(r.image)[0][0].name != "warm"
    assert int((levels(r.image) - levels(r.original)).abs().max()) <= 2


def test_a_target_the_model_already_predicts_needs_no_step(tiny: ConvModel) -> None:
    image = near_boundary()
    r = adversarial(tiny, image, target="warm")
    assert r.success and r.steps == 0 and torch.equal(r.image, image)
    assert r.linf == 0.0 and r.l2 == 0.0


def test_the_model_is_left_as_it_was(tiny: ConvModel) -> None:
    before = state_copy(tiny.module)
    flags = [p.requires_grad for p in tiny.module.parameters()]
    adversarial(tiny, near_boundary(), target="cool", random_start=True)
    adversarial(tiny, near_boundary(), untargeted=True)
    assert same_state(before, state_copy(tiny.module))
    assert all_hooks(tiny.module) == 0
    assert [p.requires_grad for p in tiny.module.parameters()] == flags
    assert all(p.grad is None for p in tiny.module.parameters())
    assert not tiny.module.training


def test_the_attack_runs_at_the_models_resize_and_sees_its_centre_crop(
    tiny: ConvModel, tmp_path: Path
) -> None:
    """A model that resizes to 20 and crops 16: the attack image is the resized one (short
    side 20, not cropped), only the centre crop changes, and the saved PNG, classified the
    public way (resized by nothing, cropped the same), is the target."""
    pre = Preprocess(resize=20, crop=16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    model = replace(tiny, preprocess=pre)
    image = near_boundary(30, 45)
    sized = attack_image(model, image)
    assert tuple(sized.shape) == (3, 20, 30)
    r = adversarial(model, image, target="cool", steps=50)
    assert r.success and torch.equal(r.original, sized) and r.image.shape == sized.shape
    changed = (r.image != r.original).any(dim=0)  # (20, 30)
    assert changed[2:18, 7:23].any()  # the centre crop the model sees…
    changed[2:18, 7:23] = False
    assert not changed.any()  # …and nothing outside it
    save_png(r.image, tmp_path / "adv.png")
    assert model.classify(load_image(tmp_path / "adv.png"))[0][0].name == "cool"


def test_a_random_start_repeats_with_its_seed(tiny: ConvModel) -> None:
    a = adversarial(tiny, near_boundary(), target="cool", random_start=True, seed=3)
    b = adversarial(tiny, near_boundary(), target="cool", random_start=True, seed=3)
    c = adversarial(tiny, near_boundary(), target="cool", random_start=True, seed=4)
    assert torch.equal(a.image, b.image) and not torch.equal(a.image, c.image)
    for r in (a, c):
        assert int((levels(r.image) - levels(r.original)).abs().max()) <= 2


def test_the_plan_estimates_a_step_without_touching_the_image(tiny: ConvModel) -> None:
    run, plan = plan_adversarial(tiny, near_boundary(), target="cool", steps=7)
    start = run.param().detach().clone()
    est = run.estimate()
    assert est.seconds_per_step > 0 and run.steps == 7 and run.optimizer == "sign"
    assert torch.equal(run.param().detach(), start)
    assert plan.target == 1 and plan.eps_levels == 2 and plan.step_size == pytest.approx(0.5 / 255)


def test_the_panel_shows_the_three_images(tiny: ConvModel) -> None:
    r = adversarial(tiny, near_boundary(), target="cool")
    panel = adversarial_panel(r)
    assert panel.mode == "RGB" and panel.width >= 3 * 16 and panel.height > 16


def _no_classes(tiny: ConvModel) -> ConvModel:
    return replace(tiny, classes=None)


BAD = [
    ({"target": "cool", "eps": 0.0}, "eps must be in (0, 1]"),
    ({"target": "cool", "eps": 2.0}, "eps must be in (0, 1]"),
    ({"target": "cool", "eps": float("nan")}, "finite"),
    ({"target": "cool", "eps": 0.001}, "less than one 8-bit level"),
    ({"target": "cool", "steps": 0}, "steps must be at least 1"),
    ({"target": "cool", "step_size": 0.0}, "step size"),
    ({"target": "cool", "step_size": float("inf")}, "step size"),
    ({"target": "cool", "untargeted": True}, "untargeted"),
    ({}, "target"),
    ({"target": "nosuch"}, "Unknown class 'nosuch'"),
    ({"target": 7}, "out of range"),
]


@pytest.mark.parametrize(("kwargs", "words"), BAD)
def test_bad_arguments_are_one_sentence_errors(
    tiny: ConvModel, kwargs: dict[str, object], words: str
) -> None:
    with pytest.raises(UserInputError, match=None) as info:
        adversarial(tiny, near_boundary(), **kwargs)  # type: ignore[arg-type]
    assert words in str(info.value) and "\n" not in str(info.value)


def test_a_model_without_classes_and_a_batch_are_refused(tiny: ConvModel) -> None:
    with pytest.raises(UserInputError, match="has no classes"):
        adversarial(_no_classes(tiny), near_boundary(), target=0)
    with pytest.raises(UserInputError, match="one image at a time"):
        adversarial(tiny, torch.stack([near_boundary()] * 2), target="cool")


# ---- real weights -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lite0() -> ConvModel:
    from convscope.models import load_model

    return load_model("efficientnet_lite0", device="cpu")


@pytest.mark.weights
@pytest.mark.parametrize(("sample", "target"), [("coffee", "goldfish"), ("cat", "zebra")])
def test_the_saved_png_of_a_photo_is_classified_as_the_target(
    lite0: ConvModel, sample: str, target: str, tmp_path: Path
) -> None:
    """eps 2/255 on efficientnet_lite0: coffee → goldfish takes 4 steps, cat → zebra 7 (at
    the default step size eps/4); 20 leave room."""
    from convscope.data.samples import load_sample

    image = load_sample(sample)
    r = adversarial(lite0, image, target=target, eps=2 / 255, steps=20)
    assert r.success and r.steps < 20 and r.linf_levels <= 2
    assert r.image.shape[-2] == 256  # the short side the model's own resize gives
    assert lite0.classify(image)[0][0].index == r.source  # the original is what it was
    save_png(r.image, tmp_path / "adv.png")
    again = load_image(tmp_path / "adv.png")
    assert torch.equal(again, r.image)
    top = lite0.classify(again)[0][0]
    assert top.name == target and top.index == r.target


@pytest.mark.weights
def test_a_minimum_probability_makes_the_model_confident(lite0: ConvModel) -> None:
    """The lecture's example: a confident prediction turned into another confident one."""
    from convscope.data.samples import load_sample

    r = adversarial(
        lite0, load_sample("coffee"), target="goldfish", eps=2 / 255, steps=40, min_probability=0.9
    )
    assert r.success and r.linf_levels <= 2
    assert r.after[0].name == "goldfish" and r.after[0].prob >= 0.9
    assert r.before[0].name == "espresso" and r.before[0].prob > 0.9


def test_a_minimum_probability_must_be_a_probability(tiny: ConvModel) -> None:
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(UserInputError, match="minimum probability"):
            adversarial(tiny, image, target="cool", min_probability=bad)
    with pytest.raises(UserInputError, match="untargeted"):
        adversarial(tiny, image, untargeted=True, min_probability=0.5)
