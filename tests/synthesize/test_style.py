"""Style transfer and texture synthesis: on the tiny model (the plan, multiscale, masks,
previews, a model left as it was) and on the real VGG16 at small sizes (style loss down ≥ 10×,
a blend of 1,0 equal to one style, tiles within 20% of the whole image)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import convscope.synthesize.recipes.style as style_mod
from convscope.data.samples import load_sample
from convscope.errors import UserInputError
from convscope.events import Progress
from convscope.models import ConvModel, load_model
from convscope.synthesize.octaves import resize
from convscope.synthesize.perceptual import current_losses
from convscope.synthesize.recipes.style import plan_style, style_transfer
from convscope.synthesize.recipes.texture import plan_texture, texture, texture_progression
from convscope.testing import same_state, state_copy

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"content_layers": ["act"], "style_layers": ["relu1", "act"]}


def _sample(name: str, side: int) -> Tensor:
    x = load_sample(name)[None]
    h, w = int(x.shape[-2]), int(x.shape[-1])
    return resize(x, style_mod.output_size((h, w), side)).clamp(0, 1)


@pytest.fixture(scope="module")
def vgg() -> ConvModel:
    return load_model("vgg16")


def test_multiscale_runs_every_scale_and_carries_adam(
    tiny: ConvModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(style_mod, "MIN_SCALE", 16)
    events: list[Progress] = []
    result = style_transfer(
        tiny,
        _sample("coffee", 64),
        [_sample("brick", 64)],
        size=64,
        steps=3,
        optimizer="adam",
        multiscale=True,
        preview_every=3,
        on_progress=events.append,
        **TINY,
    )
    assert result.sizes == [(11, 16), (22, 32), (43, 64)]
    assert result.steps == 9 and tuple(result.image.shape) == (3, 43, 64)
    done = [e.done for e in events if e.metrics]
    assert done == list(range(1, 10)) and all(e.total == 9 for e in events)
    previews = [e for e in events if getattr(e, "preview", None) is not None]
    assert [e.done for e in previews] == [3, 6, 9]
    assert [tuple(e.preview.shape[-2:]) for e in previews] == result.sizes  # type: ignore[attr-defined]


def test_the_caller_model_and_images_are_left_as_they_were(tiny: ConvModel) -> None:
    content, style = _sample("coffee", 32), _sample("brick", 32)
    copies = content.clone(), style.clone()
    before = state_copy(tiny.module)
    style_transfer(tiny, content, [style], size=32, steps=2, pooling="avg", **TINY)
    assert same_state(before, state_copy(tiny.module))
    assert all(type(m).__name__ != "AvgPool2d" for m in tiny.module.modules())
    assert torch.equal(content, copies[0]) and torch.equal(style, copies[1])
    assert all(p.grad is None for p in tiny.module.parameters())


def test_a_region_without_a_mask_keeps_the_content(tiny: ConvModel) -> None:
    content, style = _sample("coffee", 48), _sample("brick", 48)
    h, w = int(content.shape[-2]), int(content.shape[-1])
    left = torch.zeros(h, w)
    left[:, : w // 2] = 1.0
    result = style_transfer(
        tiny, content, [style], size=48, steps=20, masks=[left], tv_weight=0.0, **TINY
    )
    moved = (result.image - content[0]).abs().mean(dim=0)  # (H, W)
    # Far from the mask's edge (beyond tiny's receptive field), the right half stays put.
    assert float(moved[:, : w // 2 - 8].mean()) > 4 * float(moved[:, w // 2 + 8 :].mean())


def test_plans_check_their_arguments(tiny: ConvModel) -> None:
    c, s = _sample("coffee", 32), _sample("brick", 32)
    h, w = int(c.shape[-2]), int(c.shape[-1])
    cases = [
        ({"styles": []}, "at least one style"),
        ({"masks": [torch.ones(h, w)] * 2}, "2 masks for 1 style image"),
        ({"masks": [torch.ones(h + 1, w)]}, "masks must have the content's size"),
        ({"masks": [torch.full((h, w), 2.0)]}, "between 0 and 1"),
        ({"init": "nosie"}, "--init must be"),
        ({"init": torch.zeros(2, 3, 4, 4)}, "one image"),
        ({"precision": "fp16"}, "--precision"),
        ({"optimizer": "sgd"}, "--optimizer must be lbfgs or adam"),
        ({"style_weight": 0.0}, "--style-weight must be a number above 0"),
        ({"content_weight": float("nan")}, "--content-weight"),
        ({"content_layers": []}, "--content-layers names no layer"),
        ({"style_layers": ["conv9"]}, "Unknown layer 'conv9'"),
        ({"dream_weight": 1.0}, "--dream-weight needs --dream-layer"),
        ({"size": 8}, "--size must be"),
        ({"style_scale": 0.01}, "act needs at least 2 px"),
        ({"color_transfer": "lav"}, "color transfer"),
    ]
    for change, message in cases:
        kwargs = {"size": 32, **TINY, **change}
        styles = kwargs.pop("styles", [s])
        with pytest.raises(UserInputError, match=message):
            plan_style(tiny, c, styles, **kwargs)  # type: ignore[arg-type]
    assert plan_style(tiny, c, [s], content_weight=0.0, content_layers=[], style_layers=["act"])


# ---- on the real VGG16 -----------------------------------------------------------------------
def test_style_transfer_lowers_the_style_loss_tenfold(vgg: ConvModel) -> None:
    content, style = _sample("astronaut", 96), _sample("immunohistochemistry", 96)
    plan = plan_style(vgg, content, [style], size=96, steps=40, precision="fp32")
    objective = plan.objective_at(plan.sizes[0])
    start = current_losses(plan.model, content, objective)
    result = style_mod.run_style(plan)
    end = current_losses(plan.model, result.image[None], objective)
    assert start["content"] == 0.0
    assert end["style"] < start["style"] / 10, (start, end)
    assert end["content"] / plan.content_weight < 1.0  # below a blank image's relative error


def test_a_blend_of_one_and_zero_is_the_single_style(vgg: ConvModel) -> None:
    content = _sample("astronaut", 64)
    a, b = _sample("immunohistochemistry", 64), _sample("brick", 64)
    options = {"size": 64, "steps": 8, "seed": 3, "precision": "fp32", "init": "noise"}
    one = style_transfer(vgg, content, [a], **options)  # type: ignore[arg-type]
    blend = style_transfer(vgg, content, [a, b], blend=[1, 0], **options)  # type: ignore[arg-type]
    assert torch.equal(one.image, blend.image)
    other = style_transfer(vgg, content, [a, b], blend=[0.5, 0.5], **options)  # type: ignore[arg-type]
    assert not torch.equal(one.image, other.image)


def test_a_tiled_run_matches_the_whole_image(vgg: ConvModel) -> None:
    """Tiles of 64 px at a random offset (a multiple of relu3_1's stride, 4) with a halo of
    half its receptive field over a 128-px image: the full-size result, with a style loss
    within 20% of the untiled run's (the steps are the same up to rounding: see
    test_optimize's halo test)."""
    layers = {"content_layers": ["relu3_1"], "style_layers": ["relu1_1", "relu2_1", "relu3_1"]}
    content, style = _sample("astronaut", 128), _sample("immunohistochemistry", 128)
    options = {"size": 128, "steps": 20, "optimizer": "adam", "precision": "fp32", **layers}
    whole = plan_style(vgg, content, [style], **options)  # type: ignore[arg-type]
    tiled = plan_style(vgg, content, [style], tile=64, **options)  # type: ignore[arg-type]
    assert (tiled.tile, tiled.tile_align, tiled.tile_halo) == (64, 4, 12)
    r_whole = style_mod.run_style(whole)
    r_tiled = style_mod.run_style(tiled)
    assert r_tiled.image.shape == r_whole.image.shape == (3, 128, 128)
    objective = whole.objective_at(whole.sizes[0])
    s_whole = current_losses(vgg, r_whole.image[None], objective)["style"]
    s_tiled = current_losses(vgg, r_tiled.image[None], objective)["style"]
    s_start = current_losses(vgg, content, objective)["style"]
    assert s_whole < s_start / 3  # both actually stylized
    assert abs(s_tiled - s_whole) <= 0.2 * s_whole, (s_whole, s_tiled)


def test_texture_synthesis_matches_the_exemplar(vgg: ConvModel) -> None:
    brick = _sample("brick", 64)
    results = texture_progression(
        vgg, brick, layers=["relu1_1", "relu2_1", "relu3_1"], size=48, steps=30
    )
    assert [r.layers for r in results] == [
        ["relu1_1"],
        ["relu1_1", "relu2_1"],
        ["relu1_1", "relu2_1", "relu3_1"],
    ]
    for r in results:
        assert tuple(r.image.shape) == (3, 48, 48)
        assert r.history[-1] < r.history[0] / 10  # from noise to the exemplar's statistics
    with pytest.raises(UserInputError, match="relu5_1 needs at least 16 px"):
        texture(vgg, _sample("brick", 12), size=32, layers=["relu5_1"], steps=1)


def test_a_seamless_texture_has_no_seam_where_it_wraps(vgg: ConvModel) -> None:
    """Rolled by half its size, a texture shows its wrap-around edges in the middle: a plain
    one's statistics break there (its style loss grows more than tenfold, measured), a
    seamless one's hardly change."""
    layers = ["relu1_1", "relu2_1", "relu3_1"]
    grass = _sample("grass", 64)
    objective = plan_texture(vgg, grass, layers=layers, size=48)
    growth = {}
    for seamless in (False, True):
        r = texture(vgg, grass, layers=layers, size=48, steps=40, seamless=seamless, seed=1)
        x = r.image[None]
        rolled = torch.roll(x, shifts=(24, 24), dims=(-2, -1))
        loss = current_losses(objective.model, x, objective.objective)["style"]
        growth[seamless] = (
            current_losses(objective.model, rolled, objective.objective)["style"] / loss
        )
    assert growth[True] < 2.0, growth
    assert growth[False] > 3 * growth[True], growth
