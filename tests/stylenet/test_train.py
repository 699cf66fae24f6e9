"""Training a style network on the real VGG16, tiny: the style loss goes down for each of two
styles, the same seed gives the same network, and bad arguments are one sentence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from convscope.data.samples import load_sample
from convscope.errors import UserInputError
from convscope.events import Progress
from convscope.models import ConvModel, load_model
from convscope.stylenet import Checkpoint, TransformerNet, load_checkpoint, save_checkpoint
from convscope.stylenet.train import ContentImages, train_stylenet
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


def _same_nets(a: TransformerNet, b: TransformerNet) -> bool:
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return all(torch.equal(x, y) for x, y in pairs)


def test_resuming_from_a_checkpoint_equals_the_uninterrupted_run(
    vgg: ConvModel, tmp_path: Path
) -> None:
    """A run stopped after 3 of 6 steps and resumed from its saved checkpoint (a file, read
    back) ends with the same weights and history as the run that went straight through;
    the batches walk past one epoch of the 3 content images."""
    styles = [_small("brick"), _small("immunohistochemistry")]
    contents = [load_sample(n) for n in ("astronaut", "rocket", "coins")]
    options: dict[str, Any] = {
        "size": 32, "batch": 2, "lr": 1e-2, "style_layers": LAYERS, "norm": "conditional",
        "precision": "fp32", "seed": 3,
    }  # fmt: skip
    whole = train_stylenet(vgg, styles, contents, steps=6, **options)
    saved: list[Checkpoint] = []
    with pytest.raises(KeyboardInterrupt):
        train_stylenet(
            vgg, styles, contents, steps=6, checkpoint_every=3, on_checkpoint=saved.append,
            on_progress=_stop_after(4), **options,
        )  # fmt: skip
    assert [c.step for c in saved] == [3, 4]  # every 3 steps, and where Ctrl-C stopped it
    path = save_checkpoint(saved[0], tmp_path / "run.ckpt.safetensors")
    back = load_checkpoint(path)
    assert back.step == 3 and back.config == saved[0].config
    resumed = train_stylenet(vgg, styles, contents, steps=6, resume=back, **options)
    assert _same_nets(resumed.net, whole.net)
    assert resumed.history == whole.history
    with pytest.raises(UserInputError, match=r"different training run .*lr"):
        train_stylenet(vgg, styles, contents, steps=6, resume=back, **{**options, "lr": 0.5})
    with pytest.raises(UserInputError, match=r"different training run \(style_images"):
        train_stylenet(vgg, styles[::-1], contents, steps=6, resume=back, **options)
    with pytest.raises(UserInputError, match="past --steps 2"):
        train_stylenet(vgg, styles, contents, steps=2, resume=back, **options)


def _stop_after(steps: int) -> Any:
    def on_progress(event: Progress) -> None:
        if event.done >= steps:
            raise KeyboardInterrupt

    return on_progress


def test_a_checkpoint_file_refuses_other_files(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(UserInputError, match="not a convscope style-network training checkpoint"):
        load_checkpoint(foreign)
    pickled = tmp_path / "pickled.pt"
    torch.save({"w": torch.zeros(2)}, pickled)
    with pytest.raises(UserInputError):
        load_checkpoint(pickled)


def test_content_images_load_lazily_shrunk_and_skip_a_bad_file(tmp_path: Path) -> None:
    from PIL import Image

    from convscope.data.datasets import load_dataset

    red = torch.zeros(120, 300, 3, dtype=torch.uint8)
    red[..., 0] = 255
    red[::2, :, 1] = 9  # stripes: not one colour
    Image.fromarray(red.numpy()).save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg")
    Image.new("RGB", (200, 100), (255, 255, 255)).save(tmp_path / "c.png")  # blank
    images = ContentImages(load_dataset(tmp_path), side=64)
    assert len(images) == 3
    a = images[0]
    assert tuple(a.shape) == (1, 3, 64, 160) and float(a[0, 0].mean()) == pytest.approx(1.0)
    assert torch.equal(images[0], a)  # kept
    assert torch.equal(images[1], a)  # b.jpg is unreadable: the next image stands in
    assert torch.equal(images[2], a)  # c.png is blank: the next image (a, again) stands in
    assert list(images.skipped) == [str(tmp_path / "b.jpg"), str(tmp_path / "c.png")]


def test_a_step_with_a_non_finite_gradient_is_skipped(
    vgg: ConvModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Step 2's loss is made NaN: its update is skipped (the weights stay those of step 1)
    and marked in the history, and step 3 trains on."""
    import convscope.stylenet.train as train_lib

    real = train_lib._evaluate
    calls = [0]

    def poisoned(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        value, losses = real(*args, **kwargs)
        return (value * float("nan"), losses) if calls[0] == 2 else (value, losses)

    options: dict[str, Any] = {
        "size": 32, "batch": 1, "style_layers": LAYERS, "precision": "fp32", "seed": 1,
    }  # fmt: skip
    style, contents = [_small("brick")], [load_sample("coins")]
    one = train_stylenet(vgg, style, contents, steps=1, **options)
    monkeypatch.setattr(train_lib, "_evaluate", poisoned)
    two = train_stylenet(vgg, style, contents, steps=2, **options)
    assert _same_nets(one.net, two.net)  # step 2 changed nothing
    calls[0] = 0
    three = train_stylenet(vgg, style, contents, steps=3, **options)
    assert [h["skipped"] for h in three.history] == [0.0, 1.0, 0.0]
    assert all(torch.isfinite(p).all() for p in three.net.parameters())
    assert not _same_nets(one.net, three.net)  # step 3 moved on
