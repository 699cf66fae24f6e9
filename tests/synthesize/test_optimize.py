"""The one loop: loss goes down, early stop, checkpoint and resume, seeds, tiles, previews,
estimates, bad input, memory over a thousand steps, and a model left as it was."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from convscope.errors import UserInputError
from convscope.models.base import ConvModel, Preprocess, WeightSource
from convscope.synthesize import (
    SynthesisProgress,
    channel,
    deepdream,
    estimate,
    feature_match,
    gram_match,
    gram_matrix,
    image_param,
    l2,
    optimize,
    seeded,
    total_variation,
)
from convscope.synthesize.callbacks import clamp_to_range
from convscope.synthesize.optimize import StepState, tile_windows
from convscope.synthesize.params import ImageParam, PixelImage
from convscope.synthesize.transforms import standard
from convscope.testing import all_hooks, same_state, state_copy

pytestmark = pytest.mark.usefixtures("one_thread")

IDENTITY = Preprocess(resize=None, crop=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


class Linear(nn.Module):
    """A fixed 3×3 convolution: matching its features to a target is a convex problem."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(4, 3, 3, 3, generator=g) * 0.3)
            self.conv.bias.zero_()  # type: ignore[union-attr]
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x))  # type: ignore[no-any-return]


def _linear() -> ConvModel:
    return ConvModel("linear", Linear(), IDENTITY, WeightSource("user", "test"))


def _pixels(size: int = 12, seed: int = 0) -> ImageParam:
    with seeded(seed):
        return ImageParam(PixelImage(size, sd=0.1), decorrelate=False, activation="clamp")


def _toy() -> tuple[ConvModel, object]:
    model = _linear()
    target = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = model.module.conv(target)
    return model, -feature_match("conv", want)


def test_loss_goes_down_on_a_convex_problem() -> None:
    model, objective = _toy()
    for optimizer, lr in (("adam", 0.05), ("lbfgs", 0.5), ("sgd", 0.5)):
        result = optimize(model, objective, _pixels(), steps=100, optimizer=optimizer, lr=lr)
        assert result.steps == 100 and not result.stopped_early
        assert result.history[-1] < 0.2 * result.history[0], (optimizer, result.history[-1])
    assert result.image.shape == (1, 3, 12, 12)


def test_a_callback_can_stop_the_run() -> None:
    model, objective = _toy()

    def stop_at_5(state: StepState) -> bool | None:
        return False if state.step == 5 else None

    result = optimize(model, objective, _pixels(), steps=50, callbacks=[stop_at_5])
    assert result.steps == 5 and result.stopped_early and len(result.history) == 5


def test_events_carry_losses_by_term_and_previews() -> None:
    model, _ = _toy()
    objective = channel("relu", 1) - 0.1 * total_variation()
    events: list[SynthesisProgress] = []
    optimize(model, objective, _pixels(), steps=6, preview_every=3, on_progress=events.append)
    assert [e.done for e in events] == list(range(7))
    assert set(events[-1].losses) == {"loss", "channel('relu', 1)", "total_variation(beta=2.0)"}
    assert events[-1].losses["total_variation(beta=2.0)"] >= 0  # a penalty's loss is positive
    with_preview = [e.done for e in events if e.preview is not None]
    assert with_preview == [3, 6]
    assert events[3].preview is not None and events[3].preview.shape == (1, 3, 12, 12)


def test_checkpoint_and_resume_equal_an_uninterrupted_run(tmp_path: Path) -> None:
    model, _ = _toy()
    objective = channel("relu", 2) - 0.05 * l2("pixel")

    def run(checkpoint: Path, resume: bool = False, stop: int | None = None) -> object:
        with seeded(1):
            param = image_param(12)

        def interrupt(state: StepState) -> None:
            if state.step == stop:
                raise KeyboardInterrupt

        with seeded(7):
            return optimize(
                model,
                objective,
                param,
                transforms=standard(),
                steps=20,
                checkpoint=checkpoint,
                checkpoint_every=4,
                resume=resume,
                callbacks=[interrupt] if stop else [],
            )

    whole = run(tmp_path / "whole.safetensors")
    ck = tmp_path / "part.safetensors"
    with pytest.raises(KeyboardInterrupt):
        run(ck, stop=9)
    assert ck.exists()
    resumed = run(ck, resume=True)
    assert torch.equal(resumed.image, whole.image)  # type: ignore[attr-defined]
    assert resumed.history == whole.history  # type: ignore[attr-defined]
    with pytest.raises(UserInputError, match="different run"):
        optimize(model, channel("relu", 0), image_param(12), steps=3, checkpoint=ck, resume=True)


def test_the_same_seed_gives_the_same_image() -> None:
    model, _ = _toy()

    def run(seed: int) -> torch.Tensor:
        with seeded(seed):
            param = image_param(12, batch=2)
            return optimize(model, channel("relu", 0), param, transforms=standard(), steps=8).image

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_the_model_is_left_as_it_was_even_after_an_error() -> None:
    model = _linear()
    before = state_copy(model.module)
    flags = [p.requires_grad for p in model.module.parameters()]

    def boom(state: StepState) -> None:
        if state.step == 3:
            raise RuntimeError("boom")

    for callbacks in ([], [boom]):
        with contextlib.suppress(RuntimeError):
            optimize(model, channel("relu", 0), _pixels(), steps=5, callbacks=callbacks)
        assert all_hooks(model.module) == 0
        assert same_state(before, state_copy(model.module))
        assert [p.requires_grad for p in model.module.parameters()] == flags
        assert all(p.grad is None for p in model.module.parameters())


def test_tiles_cover_the_whole_image() -> None:
    model = _linear()
    with seeded(0):
        raw = PixelImage(40, sd=0.1)
    start = raw.pixels.detach().clone()
    param = ImageParam(raw, decorrelate=False, activation="none")
    with seeded(0):
        optimize(model, deepdream("conv"), param, steps=1, tile=16, lr=0.1)
    changed = (raw.pixels.detach() - start).abs().sum(dim=1)[0]  # (40, 40)
    assert bool((changed > 0).all())


def test_callbacks_can_change_the_image() -> None:
    model = _linear()
    param = ImageParam(PixelImage(8, sd=2.0), decorrelate=False, activation="none")
    result = optimize(
        model,
        channel("relu", 0),
        param,
        steps=2,
        optimizer="sgd",
        lr=10.0,
        callbacks=[clamp_to_range()],
    )
    assert float(result.image.min()) >= 0 and float(result.image.max()) <= 1
    shown = param().detach()
    assert float(shown.min()) >= 0 and float(shown.max()) <= 1


def test_estimate_measures_without_touching_the_image() -> None:
    model, objective = _toy()
    param = _pixels()
    before = state_copy(param)
    est = estimate(model, objective, param)  # type: ignore[arg-type]
    assert est.seconds_per_step > 0 and est.saved_bytes > 0 and est.model_bytes > 0
    assert est.peak_bytes >= est.saved_bytes
    assert same_state(before, state_copy(param))


def test_bad_arguments_are_one_sentence() -> None:
    model = _linear()
    cases = [
        ({"steps": 0}, "steps must be at least 1"),
        ({"optimizer": "adamm"}, "did you mean 'adam'"),
        ({"lr": -1.0}, "learning rate"),
        ({"tile": 4}, "tile must be at least 8"),
        ({"optimizer": "lbfgs", "tile": 16}, "L-BFGS"),
        ({"schedule": "warm"}, "schedule"),
    ]
    for kwargs, message in cases:
        with pytest.raises(UserInputError, match=message):
            optimize(model, channel("relu", 0), _pixels(), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="Unknown layer 'relu9'"):
        optimize(model, channel("relu9", 0), _pixels(), steps=1)
    assert all_hooks(model.module) == 0


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_a_thousand_steps_keep_memory_flat() -> None:
    """Nothing accumulates per step (hooks, copies, graphs): the process's resident memory
    after 1000 steps is what it was after 100, within a few MB of allocator noise."""
    model = _linear()
    seen: dict[int, int] = {}

    def measure(state: StepState) -> None:
        if state.step in (100, 1000):
            seen[state.step] = _rss_bytes()

    optimize(
        model,
        channel("relu", 1) - 1e-3 * total_variation(),
        _pixels(24),
        transforms=standard(),
        steps=1000,
        callbacks=[measure],
    )
    assert seen[1000] - seen[100] < 20 * 2**20
    assert all_hooks(model.module) == 0


@given(
    h=st.integers(8, 70),
    w=st.integers(8, 70),
    tile=st.sampled_from([8, 16, 24, 32]),
    align=st.sampled_from([1, 4, 8]),
    seed=st.integers(0, 1000),
)
@settings(max_examples=60, deadline=None)
def test_a_tile_pass_with_random_offsets_covers_every_pixel_once(
    h: int, w: int, tile: int, align: int, seed: int
) -> None:
    with seeded(seed):
        windows = tile_windows(h, w, tile, align=align)
    covered = torch.zeros(h, w, dtype=torch.int64)
    grid = torch.arange(h * w).view(h, w)
    for win in windows:
        assert (win.dy, win.dx) == (windows[0].dy, windows[0].dx)  # one offset per step
        assert win.dy % align == 0 and win.dx % align == 0 and 0 <= win.dy < tile
        assert win.y1 - win.y0 <= tile and win.x1 - win.x0 <= tile
        # The tile's pixels, as positions in the unrolled image:
        rolled = torch.roll(grid, shifts=(win.dy, win.dx), dims=(0, 1))
        covered.view(-1)[rolled[win.y0 : win.y1, win.x0 : win.x1].reshape(-1)] += 1
        assert (
            win.crop(grid[None, None].float())[0, 0]
            .long()
            .equal(rolled[win.y0 : win.y1, win.x0 : win.x1])
        )
    assert bool((covered == 1).all())


@given(
    h=st.integers(8, 70),
    w=st.integers(8, 70),
    tile=st.sampled_from([8, 16, 24, 32]),
    align=st.sampled_from([1, 4, 8]),
    halo=st.sampled_from([1, 2, 3]),
    seed=st.integers(0, 1000),
)
@settings(max_examples=60, deadline=None)
def test_tiles_with_a_halo_cover_every_pixel_once_by_their_cores(
    h: int, w: int, tile: int, align: int, halo: int, seed: int
) -> None:
    halo *= align
    with seeded(seed):
        windows = tile_windows(h, w, tile, align=align, halo=halo)
    covered = torch.zeros(h, w, dtype=torch.int64)
    for win in windows:
        assert win.core is not None and (win.dy, win.dx) == (0, 0)  # not rolled
        cy0, cy1, cx0, cx1 = win.core
        assert cy1 - cy0 <= tile and cx1 - cx0 <= tile
        assert cy0 % align == 0 and cx0 % align == 0  # the cuts lie on the stride's grid
        assert (win.y0, win.y1) == (max(0, cy0 - halo), min(h, cy1 + halo))
        assert (win.x0, win.x1) == (max(0, cx0 - halo), min(w, cx1 + halo))
        covered[cy0:cy1, cx0:cx1] += 1
        weights = win.core_weights((win.y1 - win.y0, win.x1 - win.x0))
        assert weights is not None and float(weights.sum()) == (cy1 - cy0) * (cx1 - cx0)
    assert bool((covered == 1).all())
    assert sum(win.fraction for win in windows) == pytest.approx(1.0)


def _pointwise() -> ConvModel:
    conv = nn.Conv2d(3, 4, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(4, 3, 1, 1, generator=torch.Generator().manual_seed(2)))
    return ConvModel("point", nn.Sequential(conv), IDENTITY, WeightSource("user", "t"))


def _one_step(
    model: ConvModel, objective: object, tile: int | None, **tiling: int
) -> tuple[Tensor, float]:
    with seeded(0):
        raw = PixelImage((32, 40), sd=0.1)
    start = raw.pixels.detach().clone()
    param = ImageParam(raw, decorrelate=False, activation="none")
    with seeded(3):
        result = optimize(
            model,
            objective,
            param,
            steps=1,
            optimizer="sgd",
            lr=1.0,
            tile=tile,
            **tiling,  # type: ignore[arg-type]
        )
    return start - raw.pixels.detach(), result.history[0]  # the gradient, the loss


def test_tiles_add_up_to_the_whole_image_on_a_pointwise_model() -> None:
    """A 1×1 convolution has no context, so tiles have no edge effects: tile by tile, with
    the content target cut to each tile and the Gram matrices summed over the tiles first,
    the loss and the gradient are the whole image's."""
    model = _pointwise()
    g = torch.Generator().manual_seed(1)
    target, style = torch.rand(1, 3, 32, 40, generator=g), torch.rand(1, 3, 20, 20, generator=g)
    mask = torch.zeros(32, 40)
    mask[:, :15] = 1.0
    with torch.no_grad():
        want, gram = model.module(target), gram_matrix(model.module(style))
    objectives = {
        "content": -feature_match("0", want),
        "style": -gram_match("0", gram),
        "masked style": -gram_match("0", gram, mask=mask),
        "all": -2.0 * feature_match("0", want) - gram_match("0", gram) - total_variation(),
    }
    for name, objective in objectives.items():
        whole, loss = _one_step(model, objective, None)
        tiled, tiled_loss = _one_step(model, objective, 16)
        if name == "all":  # TV misses the neighbour pairs across the tiles' edges
            assert tiled_loss == pytest.approx(loss, rel=1e-2)
            cos = torch.nn.functional.cosine_similarity(whole.flatten(), tiled.flatten(), dim=0)
            assert float(cos) > 0.99
        else:
            assert tiled_loss == pytest.approx(loss, rel=1e-5), name
            assert torch.allclose(tiled, whole, atol=1e-4 * float(whole.abs().max())), name


def _strided() -> ConvModel:
    """3×3 conv → ReLU → 2×2 max pool → 3×3 conv: stride 2, receptive field 8 px."""
    g = torch.Generator().manual_seed(4)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 5, 3, padding=1)
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return ConvModel("strided", net, IDENTITY, WeightSource("user", "t"))


def test_tiles_with_a_halo_equal_the_whole_image_on_a_model_with_context() -> None:
    """With a halo of half the receptive field, on the stride's grid, the features over each
    tile's core are the whole image's: content, masked style and TV terms, their loss and
    their gradient, tile by tile, equal the whole image's."""
    model = _strided()
    g = torch.Generator().manual_seed(1)
    target, style = torch.rand(1, 3, 32, 40, generator=g), torch.rand(1, 3, 20, 20, generator=g)
    mask = torch.zeros(32, 40)
    mask[:, :14] = 1.0
    with torch.no_grad():
        want, gram = model.module(target), gram_matrix(model.module[:2](style))
    objective = (
        -2.0 * feature_match("3", want)
        - gram_match("1", gram, mask=mask)
        - 0.5 * gram_match("1", gram)
        - total_variation()
    )
    whole, loss = _one_step(model, objective, None)
    for tile in (8, 12, 16):
        tiled, tiled_loss = _one_step(model, objective, tile, tile_align=2, tile_halo=4)
        assert tiled_loss == pytest.approx(loss, rel=1e-5), tile
        assert torch.allclose(tiled, whole, atol=1e-5 * float(whole.abs().max())), tile


def test_the_tile_alignment_is_checked() -> None:
    model = _linear()
    with pytest.raises(UserInputError, match="multiple of its alignment"):
        optimize(model, channel("relu", 0), _pixels(), steps=1, tile=20, tile_align=8)
    with pytest.raises(UserInputError, match="alignment must be at least 1"):
        optimize(model, channel("relu", 0), _pixels(), steps=1, tile=16, tile_align=0)
    with pytest.raises(UserInputError, match="halo must be 0 or more pixels, a multiple of 8"):
        optimize(model, channel("relu", 0), _pixels(), steps=1, tile=16, tile_align=8, tile_halo=4)


def test_an_optimizer_state_carries_into_the_next_run() -> None:
    model, objective = _toy()
    param = _pixels()
    first = optimize(model, objective, param, steps=5, lr=0.05)  # type: ignore[arg-type]
    assert first.optimizer_state is not None
    state = first.optimizer_state["state"][0]
    assert int(state["step"]) == 5
    # Continuing with the carried state equals one uninterrupted run of 10 steps.
    again = _pixels()
    whole = optimize(model, objective, again, steps=10, lr=0.05)  # type: ignore[arg-type]
    second = optimize(
        model,
        objective,  # type: ignore[arg-type]
        param,
        steps=5,
        lr=0.05,
        optimizer_state=first.optimizer_state,
    )
    assert torch.allclose(second.image, whole.image, atol=1e-6)
    with pytest.raises(UserInputError, match="optimizer state does not fit"):
        optimize(
            model,
            objective,  # type: ignore[arg-type]
            _pixels(),
            steps=1,
            optimizer="sgd",
            optimizer_state={"state": {}, "param_groups": []},
        )
