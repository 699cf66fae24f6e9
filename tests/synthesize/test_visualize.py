"""Class and neuron visualization: every preset raises its target, batches and diversity, one
image per channel, argument checks before any step, and a model left as it was."""

from __future__ import annotations

import pytest
import torch

from convscope.errors import UnknownNameError, UserInputError
from convscope.events import Progress
from convscope.models import ConvModel
from convscope.probe import capture
from convscope.synthesize.recipes.visualize import PRESETS, plan_visualize, visualize
from convscope.testing import all_hooks, same_state, state_copy

pytestmark = pytest.mark.usefixtures("one_thread")


def _channel_mean(model: ConvModel, images: torch.Tensor, layer: str, c: int) -> torch.Tensor:
    x = model.preprocess.normalize(images)
    return capture(model, x, [layer])[layer][:, c].mean(dim=(1, 2))


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_raises_its_channel(tiny: ConvModel, preset: str) -> None:
    before = state_copy(tiny.module)
    start, _ = plan_visualize(tiny, layer="relu1", channel=1, preset=preset, size=16, seed=0)
    with torch.no_grad():
        first = _channel_mean(tiny, start.param().detach().clamp(0, 1), "relu1", 1)
    result = visualize(tiny, layer="relu1", channel=1, preset=preset, steps=30, size=16)
    assert result.images.shape == (1, 3, 16, 16)
    assert float(result.images.min()) >= 0 and float(result.images.max()) <= 1
    assert float(_channel_mean(tiny, result.images, "relu1", 1)[0]) > float(first[0])
    assert result.preset == preset and result.steps == 30
    assert all_hooks(tiny.module) == 0 and same_state(before, state_copy(tiny.module))
    assert all(p.grad is None for p in tiny.module.parameters())


def test_a_class_and_its_probability(tiny: ConvModel) -> None:
    # warm = red + green: its best image is yellow, where p(warm) = e²/(e² + 1 + e⁻²) ≈ 0.87
    # away from the zero-padded border (mid-gray gives 1/3).
    result = visualize(tiny, target="warm", steps=60, size=16)
    assert result.target_probability is not None and result.target_probability[0] > 0.6
    assert "class_logit(0)" in result.objective


def test_one_image_per_channel(tiny: ConvModel) -> None:
    result = visualize(tiny, layer="conv1", channels=[0, 1, 2], steps=40, size=16)
    assert result.images.shape[0] == 3
    means = torch.stack(
        [_channel_mean(tiny, result.images, "conv1", c) for c in (0, 1, 2)]
    )  # (channel, image)
    # Image i excites channel i (red, green, blue box filters) more than the other images do.
    assert torch.equal(means.argmax(dim=1), torch.arange(3))


def test_diversity_makes_the_batch_differ(tiny: ConvModel) -> None:
    plain = visualize(tiny, layer="relu1", channel=0, batch=3, steps=30, size=16, seed=1)
    varied = visualize(
        tiny, layer="relu1", channel=0, batch=3, diversity_weight=50.0, steps=30, size=16, seed=1
    )
    assert "diversity('relu1')" in varied.objective

    def spread(images: torch.Tensor) -> float:
        flat = images.flatten(1)
        return float(torch.cdist(flat, flat).sum())

    assert spread(varied.images) > spread(plain.images)


def test_the_same_seed_gives_the_same_images(tiny: ConvModel) -> None:
    a = visualize(tiny, layer="relu1", channel=0, steps=8, size=16, seed=5).images
    b = visualize(tiny, layer="relu1", channel=0, steps=8, size=16, seed=5).images
    c = visualize(tiny, layer="relu1", channel=0, steps=8, size=16, seed=6).images
    assert torch.equal(a, b) and not torch.equal(a, c)


BAD = [
    ({"preset": "olah", "target": "warm"}, UnknownNameError, "Unknown preset 'olah'"),
    ({}, UserInputError, "exactly one of"),
    ({"target": "warm", "layer": "relu1", "channel": 0}, UserInputError, "exactly one"),
    ({"layer": "relu1", "channel": 9}, UserInputError, "channel 9 is out of range 0..3"),
    ({"layer": "relu1", "channel": 0, "neuron": (40, 0)}, UserInputError, "outside layer"),
    ({"channel": 0}, UserInputError, "need --layer"),
    ({"target": "warm", "steps": 0}, UserInputError, "--steps must be at least 1"),
    ({"target": "warm", "size": 8}, UserInputError, "at least 16"),
    ({"target": "warm", "diversity_weight": 1.0}, UserInputError, "--batch 2"),
    ({"target": "warm", "batch": 0}, UserInputError, "--batch must be"),
    ({"target": "nope"}, UserInputError, "Unknown class"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD)
def test_bad_arguments_fail_before_any_step(
    tiny: ConvModel, kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    events: list[Progress] = []
    options: dict[str, object] = {"size": 16, **kwargs}
    with pytest.raises(error, match=message.replace("..", r"\.\.")):
        visualize(tiny, on_progress=events.append, **options)  # type: ignore[arg-type]
    assert events == [] and all_hooks(tiny.module) == 0


def test_a_model_without_classes_says_so() -> None:
    from convscope.models import load_model

    bare = load_model("convscope.models.tiny:TinyNet")
    with pytest.raises(UserInputError, match="has no classes"):
        visualize(bare, target="warm", size=16)


def test_an_interrupted_run_leaves_the_model_as_it_was(tiny: ConvModel) -> None:
    before = state_copy(tiny.module)

    def interrupt(event: Progress) -> None:
        if event.done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        visualize(tiny, layer="relu1", channel=0, steps=10, size=16, on_progress=interrupt)
    assert all_hooks(tiny.module) == 0 and same_state(before, state_copy(tiny.module))
    assert all(p.requires_grad for p in tiny.module.parameters())


@pytest.mark.weights
def test_a_class_visualization_convinces_efficientnet() -> None:
    from convscope.models import load_model

    model = load_model("efficientnet_lite0")
    result = visualize(model, target="goldfish", steps=48, size=96, seed=0)
    assert result.target_probability is not None and result.target_probability[0] > 0.9
