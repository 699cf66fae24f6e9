"""DeepDream (Mordvintsev, Olah & Tyka 2015) as google/deepdream's notebook does it, on the one
loop:

    result = dream(model, image, "relu4_3")                      # the notebook's defaults
    result = dream(model, image, "relu4_3", guide=other_image)   # guided: objective_guide
    for frame in dream_frames(model, image, "relu4_3", frames=20, zoom=1.05): ...

- Objective: `deepdream(layer, channels)`, the mean squared activation (the notebook's
  `objective_L2`, whose gradient at the layer is the activation itself); with a `guide` image,
  `guide_objective`: each position's feature x is pulled towards the guide feature y that
  maximizes x·y (the notebook's `objective_guide`).
- Step: the gradient divided by its mean absolute value, times `step` = 1.5 (the optimizer
  "mean-abs"), 10 steps per octave.
- Units: the notebook works in Caffe's input space, 0–255 levels minus the mean colour, and its
  step of 1.5 is in those levels. The image is held in exactly that space here
  (`ModelSpaceImage` on `levels_space(model.preprocess)`): for VGG16 it is the model's own
  input space; for any other model it is 0–255 levels around that model's mean colour, so a
  step of 1.5 changes the pixels by the same amount on every model.
- Jitter: a random circular roll by up to 32 px each step (`Roll`); values clamped to the
  valid range after each step (the notebook's `clip`).
- Octaves: 4 octaves, each 1.4 times smaller than the next, the detail each octave added
  carried up to the next (`octaves(..., carry="detail")`).
- Tiles: with `tile`, an octave larger than the tile is optimized tile by tile at a random
  offset each step (the loop's `tile=`), so no seam stays in place and the network never sees
  more than a tile: memory is bounded by the tile, not the image (VGG16 relu4_3, tiles of
  512 px: about 1 GB more than the model, at 1024² and at 2048² alike). The whole-image random
  offset then serves as the jitter. A tile must hold the layer's receptive field, and the
  tile size is lowered (not below the receptive field) so that no leftover strip is narrower
  than it; a side shorter than tile + receptive field, which cannot be cut so, goes whole.
- Frames: the zoom feedback loop of the notebook (dream, zoom into the centre by `zoom`,
  dream again), a generator of frames (`dream_frames`); `save_animation` writes a GIF.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from convscope.errors import UserInputError
from convscope.events import Progress, ProgressCallback, no_progress
from convscope.models.base import ConvModel, Preprocess, check_image_batch
from convscope.synthesize import callbacks as cb
from convscope.synthesize.objectives import Inputs, Objective, custom, deepdream
from convscope.synthesize.octaves import octave_sizes, octaves, resize
from convscope.synthesize.optimize import Run, StepEstimate, SynthesisResult, seeded
from convscope.synthesize.params import ModelSpaceImage
from convscope.synthesize.transforms import Roll

__all__ = [
    "ANIMATION_SUFFIXES",
    "DreamPlan",
    "DreamResult",
    "dream",
    "dream_frames",
    "guide_objective",
    "levels_space",
    "plan_dream",
    "save_animation",
    "zoom_image",
]

STEP = 1.5
"""google/deepdream's `step_size`, in 0–255 levels (see the module docstring)."""
JITTER = 32
"""google/deepdream's `jitter`: the random roll, in pixels."""
ANIMATION_SUFFIXES = (".gif",)
"""What `save_animation` writes (MP4 would need PyAV, which convscope does not depend on)."""
_CHUNK = 8192  # positions per block when guide features are matched (bounds the x·y matrix)


def levels_space(preprocess: Preprocess) -> Preprocess:
    """The 0–255 levels, minus the model's mean colour, in which DeepDream's step is given:
    Caffe's input space. For VGG16 (Caffe's preprocessing) it is the model's own space."""
    k = 255.0 / float(preprocess.scale)
    r, g, b = (k * float(m) for m in preprocess.mean)
    return Preprocess(resize=None, crop=None, scale=255.0, mean=(r, g, b), std=(1.0, 1.0, 1.0))


def _count(value: Any, what: str, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise UserInputError(f"{what} must be at least {least}, got {value!r}.")
    return value


def _positive(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserInputError(f"{what} must be a positive number, got {value!r}.")
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise UserInputError(f"{what} must be a positive number, got {value!r}.")
    return v


def _fit_side(image: Tensor, size: int | None) -> Tensor:
    """The image with its longer side resized to `size` (kept as it is for None)."""
    if size is None:
        return image
    _count(size, "--size", 16)
    h, w = int(image.shape[-2]), int(image.shape[-1])
    s = size / max(h, w)
    target = (max(1, round(h * s)), max(1, round(w * s)))
    return resize(image, target).clamp(0.0, 1.0)


# ---- guided DeepDream ----------------------------------------------------------------------------
def guide_objective(
    model: ConvModel, layer: str, guide: Tensor, *, channels: Sequence[int] | None = None
) -> Objective:
    """Guided DeepDream (the google/deepdream notebook's `objective_guide`): at each position of
    `layer`, the dot product of its feature x with the feature y of the guide image (seen as
    the model sees it) that maximizes x·y. Its gradient at the layer is that best-matching
    guide feature, so each part of the image grows towards what it most resembles in the
    guide."""
    model.resolve(layer)
    g = model.preprocess.geometry(check_image_batch(guide, "the guide image")[:1].float())
    from convscope.probe import capture

    x = model.preprocess.normalize(g.to(model.device))
    try:
        act = capture(model, x, [layer])[layer]
    except RuntimeError:
        raise UserInputError(
            f"the guide image ({g.shape[-1]}x{g.shape[-2]}) is too small for layer {layer}."
        ) from None
    feats = act.clone().float()  # out of inference mode, so it may enter the graph
    if feats.dim() != 4:
        raise UserInputError(f"layer {layer} has no positions for a guide to match.")
    chosen = None if channels is None else [int(c) for c in channels]
    if chosen is not None:
        n = int(feats.shape[1])
        for c in chosen:
            if not 0 <= c < n:
                raise UserInputError(f"channel {c} is out of range 0..{n - 1} for layer {layer}.")
        feats = feats[:, chosen]
    y = feats[0].flatten(1)  # (C, Q): the guide's features, one column per position

    def fn(inputs: Inputs) -> Tensor:
        a = inputs.act(layer)
        if chosen is not None:
            a = a[:, chosen]
        b, c = int(a.shape[0]), int(a.shape[1])
        xf = a.reshape(b, c, -1)  # (B, C, P)
        yy = y.to(xf)
        with torch.no_grad():
            best = torch.cat(
                [
                    torch.einsum("bcp,cq->bpq", xf[..., i : i + _CHUNK], yy).argmax(dim=2)
                    for i in range(0, int(xf.shape[-1]), _CHUNK)
                ],
                dim=1,
            )  # (B, P): the best guide position for each position
        matched = yy[:, best].permute(1, 0, 2)  # (B, C, P)
        return (xf * matched).sum(dim=1).mean()

    shown = "" if chosen is None else f", channels={chosen!r}"
    return custom(fn, [layer], f"guide({layer!r}{shown})")


# ---- planning ----------------------------------------------------------------------------------
def _tile_for(h: int, w: int, tile: int, need: int, least: int) -> int:
    """The tile the loop gets for an h×w octave: between `need` (the layer's receptive field)
    and `tile` px, the one whose narrowest leftover strip (the last tile along a side) is
    widest, so that no tile is a thin strip that sees too little. A side that cannot be cut
    so (shorter than tile + need) goes whole, as does one whose strips would be too narrow
    for the layer to run at all (under `least`, the layer's stride)."""
    if max(h, w) <= tile:
        return tile

    def narrowest(t: int) -> int:
        return min((d % t) or t for d in (h, w) if d > t)

    best = max(range(need, tile + 1), key=lambda t: (narrowest(t), t))
    strip = narrowest(best)
    if strip >= need:
        return best
    if max(h, w) < tile + need or strip < least:
        return max(h, w)
    return best


@dataclass
class DreamPlan:
    """What `dream` will do: the image (at its working size), the objective, the octaves'
    sizes and the settings of each octave's run."""

    model: ConvModel
    image: Tensor  # (1, 3, H, W) in [0, 1], on the CPU
    objective: Objective
    sizes: list[tuple[int, int]]  # (H, W) of each octave, smallest first
    steps: int
    step: float
    jitter: int
    tile: int | None
    need: int  # the receptive field (px) a tile must hold
    least: int  # the layer's stride: the narrowest input it runs on
    octaves: int
    octave_scale: float
    space: Preprocess  # where the image is held: `levels_space(model.preprocess)`

    def run_for(self, start: Tensor) -> Run:
        """The run of one octave, from `start` (1, 3, h, w) in [0, 1] (may stray out of range
        by the carried detail; the first step's clamp brings it back)."""
        h, w = int(start.shape[-2]), int(start.shape[-1])
        param = ModelSpaceImage(self.space, (h, w), init=start).to(self.model.device)
        tile = None if self.tile is None else _tile_for(h, w, self.tile, self.need, self.least)
        tiled = tile is not None and max(h, w) > tile
        # Tiled: the loop's random whole-image offset each step is the jitter.
        transforms = None if tiled or self.jitter == 0 else Roll(self.jitter)
        return Run(
            self.model,
            self.objective,
            param,
            transforms=transforms,
            steps=self.steps,
            optimizer="mean-abs",
            lr=self.step,
            callbacks=[cb.clamp_to_range()],
            tile=tile,
        )

    @property
    def total_steps(self) -> int:
        return self.steps * len(self.sizes)

    def estimate(self) -> StepEstimate:
        """The largest octave's memory, and the time per step averaged over the octaves (the
        largest one is timed; the others are taken in proportion to their pixels)."""
        est = self.run_for(resize(self.image, self.sizes[-1])).estimate()
        top = self.sizes[-1][0] * self.sizes[-1][1]
        share = sum(h * w for h, w in self.sizes) / (top * len(self.sizes))
        return dataclasses.replace(est, seconds_per_step=est.seconds_per_step * share)


def _layer_channels(model: ConvModel, layer: str, size: tuple[int, int], whole: bool) -> int:
    from convscope.probe import capture

    probe = (min(size[0], 64), min(size[1], 64))  # the count does not depend on the size
    x = model.preprocess.normalize(torch.zeros(1, 3, *probe, device=model.device))
    try:
        act = capture(model, x, [layer])[layer]
    except RuntimeError:
        what = "the image" if whole else "the smallest octave"
        tail = "" if whole else "; give fewer --octaves"
        raise UserInputError(
            f"{what} ({size[1]}x{size[0]}) is too small for layer {layer}{tail}."
        ) from None
    return int(act.shape[1])


def plan_dream(
    model: ConvModel,
    image: Tensor,
    layer: str,
    *,
    channels: Sequence[int] | None = None,
    guide: Tensor | None = None,
    octaves: int = 4,
    octave_scale: float = 1.4,
    steps: int = 10,
    step: float = STEP,
    jitter: int = JITTER,
    tile: int | None = None,
    size: int | None = None,
) -> DreamPlan:
    """Check every argument and plan the dream (see `dream`), before any step."""
    x = check_image_batch(image, "the image")
    if x.shape[0] != 1:
        raise UserInputError(f"dream takes one image, got a batch of {x.shape[0]}.")
    x = _fit_side(x.detach().float().cpu(), size)
    model.resolve(layer)
    _count(octaves, "--octaves")
    if isinstance(octave_scale, bool) or not isinstance(octave_scale, (int, float)):
        raise UserInputError(f"--octave-scale must be a number above 1, got {octave_scale!r}.")
    if not (math.isfinite(octave_scale) and octave_scale > 1):
        raise UserInputError(f"--octave-scale must be a number above 1, got {octave_scale!r}.")
    _count(steps, "--steps")
    rate = _positive(step, "--step")
    _count(jitter, "--jitter", 0)
    h, w = int(x.shape[-2]), int(x.shape[-1])
    sizes = octave_sizes((h, w), octaves=octaves, scale=float(octave_scale))
    need, least = 8, 1
    if tile is not None:
        _count(tile, "--tile", 8)
        from convscope.probe import receptive_fields

        rf = receptive_fields(model, layer, 224)[layer]
        need = max(8, *(rf.size if rf is not None else (8,)))
        least = max(rf.stride) if rf is not None else 1
        if tile < need:
            raise UserInputError(
                f"--tile {tile} is smaller than the {need} px receptive field of layer {layer}; "
                f"give --tile {need} or more."
            )
    width = _layer_channels(model, layer, sizes[0], len(sizes) == 1)
    chosen = None if channels is None else [int(c) for c in channels]
    if chosen is not None:
        if not chosen:
            raise UserInputError("--channels names no channel.")
        for c in chosen:
            if not 0 <= c < width:
                raise UserInputError(
                    f"channel {c} is out of range 0..{width - 1} for layer {layer}."
                )
    if guide is None:
        objective = deepdream(layer, chosen)
    else:
        objective = guide_objective(model, layer, guide, channels=chosen)
    return DreamPlan(
        model,
        x,
        objective,
        sizes,
        steps,
        rate,
        jitter,
        tile,
        need,
        least,
        octaves,
        float(octave_scale),
        levels_space(model.preprocess),
    )


# ---- running -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DreamResult:
    image: Tensor  # (1, 3, H, W) in [0, 1], on the CPU
    objective: str  # its repr
    octave_sizes: list[tuple[int, int]]  # (H, W), smallest first
    steps: int  # per octave
    octave_seconds: list[float]  # wall time of each octave
    losses: dict[str, float] = field(default_factory=dict)  # the last step's


def _octave_events(on_progress: ProgressCallback, k: int, n: int, steps: int) -> ProgressCallback:
    """One "dream" bar over all octaves: each octave's step events, counted on from the
    octaves before it."""

    def emit(event: Progress) -> None:
        on_progress(
            dataclasses.replace(
                event,
                task="dream",
                done=k * steps + event.done,
                total=n * steps,
                message=f"octave {k + 1}/{n}",
            )
        )

    return emit


def _run(
    plan: DreamPlan, on_progress: ProgressCallback, preview_every: int | None = None
) -> DreamResult:
    seconds: list[float] = []
    last: list[SynthesisResult] = []
    n = len(plan.sizes)

    def one(start: Tensor, k: int) -> Tensor:
        t0 = time.perf_counter()
        result = plan.run_for(start).start(
            task="dream",
            preview_every=preview_every,
            on_progress=_octave_events(on_progress, k, n, plan.steps),
        )
        seconds.append(time.perf_counter() - t0)
        last[:] = [result]
        return result.image

    image = octaves(plan.image, one, octaves=plan.octaves, scale=plan.octave_scale, carry="detail")
    losses = last[0].losses if last else {}
    return DreamResult(
        image.clamp(0.0, 1.0), repr(plan.objective), plan.sizes, plan.steps, seconds, losses
    )


def dream(
    model: ConvModel,
    image: Tensor,
    layer: str,
    *,
    channels: Sequence[int] | None = None,
    guide: Tensor | None = None,
    octaves: int = 4,
    octave_scale: float = 1.4,
    steps: int = 10,
    step: float = STEP,
    jitter: int = JITTER,
    tile: int | None = None,
    size: int | None = None,
    seed: int = 0,
    preview_every: int | None = None,
    on_progress: ProgressCallback = no_progress,
) -> DreamResult:
    """DeepDream `image` (3, H, W) or (1, 3, H, W) in [0, 1] at `layer` (see the module
    docstring for the method and its settings).

    Args:
        channels: amplify only these channels of the layer (default: all).
        guide: an image whose features the dream grows towards (guided DeepDream).
        octaves, octave_scale: how many scales, each `octave_scale` times smaller than the
            next (octaves whose short side would fall under 16 px are left out).
        steps: steps per octave; `step`: its size in 0–255 levels; `jitter`: the random roll.
        tile: optimize larger octaves tile by tile (bounded memory, no seams).
        size: resize the image so that its longer side is `size` first (default: as it is).
        seed: the same seed gives the same dream.
        preview_every: attach the current octave's image to every N-th step's event.
    """
    plan = plan_dream(
        model,
        image,
        layer,
        channels=channels,
        guide=guide,
        octaves=octaves,
        octave_scale=octave_scale,
        steps=steps,
        step=step,
        jitter=jitter,
        tile=tile,
        size=size,
    )
    with seeded(seed):
        return _run(plan, on_progress, preview_every)


def zoom_image(image: Tensor, factor: float) -> Tensor:
    """(B, 3, H, W) magnified by `factor` about its centre, at the same size (bilinear): a
    factor above 1 zooms in, below 1 zooms out (the border is then filled by reflection)."""
    z = _positive(factor, "--zoom")
    x = check_image_batch(image)
    theta = torch.tensor([[1.0 / z, 0.0, 0.0], [0.0, 1.0 / z, 0.0]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return out.clamp(0.0, 1.0)


def dream_frames(
    model: ConvModel,
    image: Tensor,
    layer: str,
    *,
    frames: int = 10,
    zoom: float = 1.05,
    channels: Sequence[int] | None = None,
    guide: Tensor | None = None,
    octaves: int = 4,
    octave_scale: float = 1.4,
    steps: int = 10,
    step: float = STEP,
    jitter: int = JITTER,
    tile: int | None = None,
    size: int | None = None,
    seed: int = 0,
    on_progress: ProgressCallback = no_progress,
) -> Iterator[Tensor]:
    """The notebook's zoom feedback loop: frame 1 is the dream of `image`; each next frame is
    the dream of the previous one magnified by `zoom` about its centre. Yields the
    `frames` frames, (3, H, W) in [0, 1], one at a time, and reports a "frames" progress
    event after each (the dream's own step events too). Arguments are checked before the
    first frame (when this is called); frame k is seeded with `seed + k`."""
    _count(frames, "--frames")
    factor = _positive(zoom, "--zoom")
    options: dict[str, Any] = dict(
        channels=channels,
        octaves=octaves,
        octave_scale=octave_scale,
        steps=steps,
        step=step,
        jitter=jitter,
        tile=tile,
    )
    plan = plan_dream(model, image, layer, guide=guide, size=size, **options)
    return _frames(plan, frames, factor, seed, on_progress)


def _frames(
    plan: DreamPlan, frames: int, factor: float, seed: int, on_progress: ProgressCallback
) -> Iterator[Tensor]:
    on_progress(Progress("frames", 0, frames, "frames"))
    current = plan.image
    for k in range(frames):
        if k > 0:
            current = zoom_image(current, factor)
            plan = dataclasses.replace(plan, image=current)
        with seeded(seed + k):
            current = _run(plan, on_progress).image
        on_progress(Progress("frames", k + 1, frames, "frames"))
        yield current[0]


def save_animation(
    frames: Sequence[Tensor], path: str | Path, *, fps: float = 10.0, comment: str | None = None
) -> Path:
    """Write frames ((3, H, W) in [0, 1]) as a looping animated GIF, atomically; `comment`
    (e.g. the recipe) goes into the file's comment extension."""
    from convscope.data.files import atomic_path
    from convscope.data.images import to_pil

    target = Path(path)
    if target.suffix.lower() not in ANIMATION_SUFFIXES:
        raise UserInputError(
            f"an animation is written as .gif, not {target.suffix or 'a file without a suffix'} "
            "(MP4 would need PyAV, which convscope does not depend on)."
        )
    if not frames:
        raise UserInputError("there are no frames to write.")
    rate = _positive(fps, "fps")
    pictures = [to_pil(f).convert("RGB") for f in frames]
    with atomic_path(target) as tmp:
        pictures[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=pictures[1:],
            duration=round(1000 / rate),
            loop=0,
            **({} if comment is None else {"comment": comment}),
        )
    return target
