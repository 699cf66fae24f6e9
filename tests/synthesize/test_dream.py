"""DeepDream: the step in 0–255 levels, the guide objective's gradient, octaves, tiles that bound
what the network sees and leave no seam, the zoom animation, bad arguments before any step,
and (on VGG16's weights) a dream that changes the image and stays in range."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import Tensor

from convscope.errors import UnknownNameError, UserInputError
from convscope.events import Progress
from convscope.models import ConvModel, load_model
from convscope.models.vgg import PREPROCESS as VGG_PREPROCESS
from convscope.probe import capture
from convscope.synthesize.objectives import Inputs, deepdream
from convscope.synthesize.octaves import resize
from convscope.synthesize.recipes.dream import (
    dream,
    dream_frames,
    guide_objective,
    levels_space,
    plan_dream,
    save_animation,
    zoom_image,
)
from convscope.testing import all_hooks, same_state, state_copy

pytestmark = pytest.mark.usefixtures("one_thread")


def _image(h: int, w: int, seed: int = 0) -> Tensor:
    """A smooth random colour image (1, 3, h, w) in [0.2, 0.8]."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, max(2, h // 8), max(2, w // 8), generator=g)
    return (0.2 + 0.6 * resize(small, (h, w))).clamp(0, 1)


@pytest.fixture(scope="module")
def vgg() -> ConvModel:
    return load_model("vgg16")


def test_the_step_is_in_0_255_levels(tiny: ConvModel) -> None:
    """One step, no jitter: the image moves by 1.5 levels of 0–255 on average (the gradient
    over its mean absolute value, times google/deepdream's 1.5)."""
    start = torch.full((1, 3, 24, 24), 0.5)
    result = dream(tiny, start, "act", octaves=1, steps=1, jitter=0)
    moved = (result.image - start).abs().mean() * 255
    assert float(moved) == pytest.approx(1.5, rel=1e-3)


def test_levels_are_vgg16s_own_input_space() -> None:
    x = torch.rand(1, 3, 5, 5)
    assert torch.allclose(levels_space(VGG_PREPROCESS).normalize(x), VGG_PREPROCESS.normalize(x))


def test_the_guide_objective_pulls_each_position_to_its_best_guide_feature(
    tiny: ConvModel,
) -> None:
    """objective_guide of google/deepdream: the gradient at the layer is, at each position,
    the guide feature with the largest dot product (here / the number of positions)."""
    guide = _image(16, 16, seed=3)
    objective = guide_objective(tiny, "act", guide)
    assert objective.layers == frozenset({"act"}) and "guide('act')" in repr(objective)
    y = capture(tiny, tiny.preprocess.normalize(guide), ["act"])["act"][0].flatten(1)  # (C, Q)
    x = torch.randn(2, int(y.shape[0]), 3, 5, requires_grad=True)
    image = torch.zeros(2, 3, 6, 10)
    value = objective(Inputs({"act": x}, image))
    value.backward()  # type: ignore[no-untyped-call]
    assert x.grad is not None
    xf = x.detach().flatten(2)  # (B, C, P)
    best = torch.einsum("bcp,cq->bpq", xf, y).argmax(dim=2)  # (B, P)
    want = torch.stack([y[:, best[b]] for b in range(2)]) / (xf.shape[-1] * 2)
    assert torch.allclose(x.grad.flatten(2), want, atol=1e-6)


def test_a_dream_raises_its_objective_stays_in_range_and_leaves_the_model(
    tiny: ConvModel,
) -> None:
    before = state_copy(tiny.module)
    image = _image(40, 48)
    events: list[Progress] = []
    result = dream(tiny, image, "act", octaves=3, steps=4, on_progress=events.append)
    assert result.image.shape == (1, 3, 40, 48)
    assert float(result.image.min()) >= 0 and float(result.image.max()) <= 1
    assert result.octave_sizes == [(20, 24), (29, 34), (40, 48)]
    assert len(result.octave_seconds) == 3

    def value(x: Tensor) -> float:
        return float(capture(tiny, tiny.preprocess.normalize(x), ["act"])["act"].pow(2).mean())

    assert value(result.image) > 1.2 * value(image)
    # One "dream" bar over the octaves: 0..12, never backwards.
    done = [e.done for e in events if e.task == "dream"]
    assert done == sorted(done) and done[-1] == 12 and {e.total for e in events} == {12}
    assert all_hooks(tiny.module) == 0 and same_state(before, state_copy(tiny.module))
    assert all(p.requires_grad for p in tiny.module.parameters())


def test_the_same_seed_gives_the_same_dream(tiny: ConvModel) -> None:
    image = _image(32, 32)
    a = dream(tiny, image, "act", octaves=2, steps=3, seed=4).image
    b = dream(tiny, image, "act", octaves=2, steps=3, seed=4).image
    c = dream(tiny, image, "act", octaves=2, steps=3, seed=5).image
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_channels_choose_what_grows(tiny: ConvModel) -> None:
    image = _image(32, 32)
    result = dream(tiny, image, "act", channels=[1], octaves=1, steps=6)
    acts = capture(tiny, tiny.preprocess.normalize(result.image), ["act"])["act"]
    start = capture(tiny, tiny.preprocess.normalize(image), ["act"])["act"]
    gain = acts.pow(2).mean(dim=(0, 2, 3)) / start.pow(2).mean(dim=(0, 2, 3))
    assert float(gain[1]) > float(gain[0])
    assert result.objective == repr(deepdream("act", [1]))


def _watch(model: ConvModel) -> tuple[list[tuple[int, int]], object]:
    """The (H, W) of every input the network is given (and the hook's handle)."""
    shapes: list[tuple[int, int]] = []

    def hook(_m: object, args: tuple[Tensor, ...]) -> None:
        shapes.append((int(args[0].shape[-2]), int(args[0].shape[-1])))

    return shapes, model.module.register_forward_pre_hook(hook)


@pytest.fixture
def seen(tiny: ConvModel) -> Iterator[list[tuple[int, int]]]:
    shapes, handle = _watch(tiny)
    yield shapes
    handle.remove()  # type: ignore[attr-defined]


def test_a_2048_px_dream_never_shows_the_network_more_than_a_tile(
    tiny: ConvModel, seen: list[tuple[int, int]]
) -> None:
    """Memory is bounded by the tile: the network only ever sees tiles."""
    image = _image(2048, 2048)
    result = dream(tiny, image, "act", octaves=2, octave_scale=2.0, steps=1, tile=512)
    assert result.image.shape == (1, 3, 2048, 2048)
    assert seen and max(max(s) for s in seen) <= 512
    assert (1024, 1024) not in seen  # the small octave is tiled too


def test_no_tile_is_narrower_than_the_receptive_field() -> None:
    """VGG16's relu4_3 sees 92 px. 300 px in tiles of at most 128 px: three of 100 px, not
    128 + 128 + 44. 131 px cannot be cut into tiles of 92 px or more: it goes whole."""
    vgg = load_model("vgg16", weights="random")
    shapes, handle = _watch(vgg)
    try:
        for (h, w), want in (((300, 100), (100, 100)), ((131, 131), (131, 131))):
            plan = plan_dream(vgg, _image(h, w), "relu4_3", octaves=1, steps=1, tile=128)
            shapes.clear()  # the checks' own forwards
            plan.run_for(plan.image).start()
            assert set(shapes) == {want}
    finally:
        handle.remove()  # type: ignore[attr-defined]


def test_the_zoom_magnifies_about_the_centre() -> None:
    x = torch.zeros(1, 3, 20, 20)
    x[..., 8:12, 8:12] = 1.0  # a 4 px square in the middle
    assert torch.allclose(zoom_image(x, 1.0), x, atol=1e-6)
    big = zoom_image(x, 2.0)
    assert float(big[..., 7:13, 7:13].min()) == 1.0  # now 8 px wide (6..13, soft edges)
    assert float(big[..., :5, :].max()) == 0.0 and float(big[..., 15:, :].max()) == 0.0
    small = zoom_image(x, 0.5)  # zooming out: the border is filled by reflection
    assert small.shape == x.shape and float(small[..., 10, 10].min()) == 1.0


def test_frames_zoom_and_dream_again(tiny: ConvModel, tmp_path: Path) -> None:
    image = _image(32, 32)
    events: list[Progress] = []
    frames = list(
        dream_frames(
            tiny, image, "act", frames=3, zoom=1.2, octaves=1, steps=2, on_progress=events.append
        )
    )
    assert len(frames) == 3 and all(f.shape == (3, 32, 32) for f in frames)
    first = dream(tiny, image, "act", octaves=1, steps=2).image[0]
    assert torch.equal(frames[0], first)
    assert not torch.equal(frames[1], frames[2])
    assert [e.done for e in events if e.task == "frames"] == [0, 1, 2, 3]
    gif = save_animation(frames, tmp_path / "a.gif", fps=5)
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == 3 and im.size == (32, 32)
        assert im.info["duration"] == 200
    with pytest.raises(UserInputError, match=r"not \.mp4"):
        save_animation(frames, tmp_path / "a.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif"]


def test_the_image_size_option_fits_the_longer_side(tiny: ConvModel) -> None:
    result = dream(tiny, _image(60, 90), "act", octaves=1, steps=1, size=30)
    assert result.image.shape == (1, 3, 20, 30)


BAD = [
    ({"layer": "nope"}, UnknownNameError, "Unknown layer 'nope'"),
    ({"octaves": 0}, UserInputError, "--octaves must be at least 1"),
    ({"octave_scale": 1.0}, UserInputError, "--octave-scale must be a number above 1"),
    ({"octave_scale": float("nan")}, UserInputError, "--octave-scale must be a number above"),
    ({"steps": 0}, UserInputError, "--steps must be at least 1"),
    ({"step": 0.0}, UserInputError, "--step must be a positive number"),
    ({"channels": [2]}, UserInputError, r"channel 2 is out of range 0\.\.1 for layer act"),
    ({"channels": []}, UserInputError, "names no channel"),
    ({"tile": 4}, UserInputError, "--tile must be at least 8"),
    ({"size": 8}, UserInputError, "--size must be at least 16"),
    ({"frames": 0}, UserInputError, "--frames must be at least 1"),
    ({"zoom": 0.0}, UserInputError, "--zoom must be a positive number"),
    ({"zoom": float("nan")}, UserInputError, "--zoom must be a positive number"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD)
def test_bad_arguments_fail_before_any_step(
    tiny: ConvModel, kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    events: list[Progress] = []
    options: dict[str, object] = {"layer": "act", "octaves": 1, "steps": 1, **kwargs}
    layer = options.pop("layer")
    with pytest.raises(error, match=message):
        frames = dream_frames(tiny, _image(24, 24), layer, on_progress=events.append, **options)  # type: ignore[arg-type]
        next(frames)
    assert events == [] and all_hooks(tiny.module) == 0


def test_a_tile_must_hold_the_receptive_field() -> None:
    vgg = load_model("vgg16", weights="random")
    with pytest.raises(UserInputError) as info:
        plan_dream(vgg, _image(128, 128), "relu4_3", tile=64)
    assert str(info.value) == (
        "--tile 64 is smaller than the 92 px receptive field of layer relu4_3; "
        "give --tile 92 or more."
    )
    plan = plan_dream(vgg, _image(128, 128), "relu4_3", tile=92, octaves=2)
    assert plan.need == 92 and plan.sizes == [(91, 91), (128, 128)]


def test_an_image_too_small_for_the_layer_says_so() -> None:
    vgg = load_model("vgg16", weights="random")
    with pytest.raises(UserInputError, match="too small for layer relu5_3"):
        plan_dream(vgg, _image(12, 12), "relu5_3")


# ---- on VGG16's weights ----------------------------------------------------------------------
def _cat(size: int) -> Tensor:
    from convscope.data.samples import load_sample

    return resize(load_sample("cat")[None], (size, size)).clamp(0, 1)


@pytest.mark.weights
def test_a_vgg16_dream_changes_the_image_and_stays_in_range(vgg: ConvModel) -> None:
    image = _cat(96)
    result = dream(vgg, image, "relu4_3", octaves=2, steps=4)
    assert result.image.shape == image.shape
    assert float(result.image.min()) >= 0 and float(result.image.max()) <= 1
    assert float((result.image - image).abs().mean()) > 0.02

    def value(x: Tensor) -> float:
        return float(
            capture(vgg, vgg.preprocess.normalize(x), ["relu4_3"])["relu4_3"].pow(2).mean()
        )

    assert value(result.image) > 2 * value(image)


def _border_score(change: Tensor, border: int) -> float:
    """How far the mean absolute horizontal difference across column boundary `border`
    (between columns border and border + 1) stands out of the other boundaries': its robust
    z-score (distance from the median in median absolute deviations)."""
    profile = (change[..., :, 1:] - change[..., :, :-1]).abs().mean(dim=(0, 1, 2))
    others = torch.cat([profile[:border], profile[border + 1 :]])
    median = others.median()
    spread = (others - median).abs().median()
    return float((profile[border] - median) / spread)


@pytest.mark.weights
def test_tiles_leave_no_seam(vgg: ConvModel) -> None:
    """A 128 px dream in 64 px tiles: across the middle row and column, where fixed tiles
    would meet, what the dream changed steps no more than anywhere else. The control, two
    halves dreamed on their own and put side by side, has the seam the statistic finds."""
    image = _cat(128)
    options: dict[str, object] = {"octaves": 1, "steps": 8}
    tiled = dream(vgg, image, "relu3_3", tile=64, **options).image  # type: ignore[arg-type]
    assert tiled.shape == image.shape
    change = tiled - image
    assert _border_score(change, 63) < 6
    assert _border_score(change.transpose(-1, -2), 63) < 6
    left = dream(vgg, image[..., :64], "relu3_3", **options).image  # type: ignore[arg-type]
    right = dream(vgg, image[..., 64:], "relu3_3", **options).image  # type: ignore[arg-type]
    stitched = torch.cat([left, right], dim=-1)
    assert _border_score(stitched - image, 63) > 10


@pytest.mark.weights
def test_a_guided_dream_grows_towards_the_guide(vgg: ConvModel) -> None:
    """Each position's feature turns towards its closest guide feature: the mean, over the
    positions, of the best cosine similarity with a guide feature grows much more than a
    plain dream makes it grow."""
    import torch.nn.functional as F

    from convscope.data.samples import load_sample

    image = _cat(64)
    guide = load_sample("coffee")
    seen = vgg.preprocess.normalize(vgg.preprocess.geometry(guide[None]))
    y = F.normalize(capture(vgg, seen, ["relu4_3"])["relu4_3"][0].flatten(1), dim=0)

    def closeness(x: Tensor) -> float:
        a = capture(vgg, vgg.preprocess.normalize(x), ["relu4_3"])["relu4_3"][0].flatten(1)
        return float((F.normalize(a, dim=0).T @ y).max(dim=1).values.mean())

    guided = dream(vgg, image, "relu4_3", guide=guide, octaves=1, steps=10).image
    plain = dream(vgg, image, "relu4_3", octaves=1, steps=10).image
    start = closeness(image)
    assert closeness(guided) - start > 2 * (closeness(plain) - start) > 0
