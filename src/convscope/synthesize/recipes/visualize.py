"""Class and neuron visualization: the image that most excites a class, a channel or a unit.

    result = visualize(model, target="goldfish")                     # lucid preset
    result = visualize(model, layer="relu4_3", channel=42, preset="simonyan")
    result = visualize(model, layer="block10", channels=range(16))  # one image per channel

Presets, with the published settings:

- `simonyan` — Simonyan et al. 2014 with CS231n's settings: gradient ascent on the score with
  an L2 penalty (λ = 1e-3 on the ImageNet-normalized image), steps of 25 along the
  L2-normalized gradient, a random roll of up to 16 px, a Gaussian blur (σ 0.5) every 10
  steps, the image clamped to range, 100 steps.
- `yosinski` — Yosinski et al. 2015's best setting (their Table 1): L2 decay 1e-4, a Gaussian
  blur of radius 1.0 every 4 steps, no small-norm or small-contribution clipping, 1000 steps.
  (`norm_percentile` turns on the small-norm clipping of their other settings.)
- `lucid` (default) — Olah et al. 2017 / lucid: a Fourier parameterization with decorrelated
  colour and a sigmoid, lucid's standard transforms (pad 12, jitter 8, scale 0.9–1.1, rotate
  ±10°, jitter 4), Adam at 0.05, 512 steps.

Both classic presets optimize the image in ImageNet-normalized units (as CS231n's code does)
whatever the model, so their step sizes and penalties mean the same on every model; the model
sees its own preprocessing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from convscope.errors import UnknownNameError, UserInputError
from convscope.events import ProgressCallback, no_progress
from convscope.models.base import ConvModel, Preprocess
from convscope.synthesize import callbacks as cb
from convscope.synthesize.objectives import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Objective,
    channel,
    class_logit,
    diversity,
    l2,
    neuron,
    total,
)
from convscope.synthesize.optimize import Callback, Run, SynthesisResult, seeded
from convscope.synthesize.params import ModelSpaceImage, image_param
from convscope.synthesize.transforms import Roll, standard

__all__ = ["PRESETS", "Preset", "VisualizeResult", "layer_shape", "plan_visualize", "visualize"]

IMAGENET = Preprocess(resize=None, crop=None, mean=IMAGENET_MEAN, std=IMAGENET_STD)
"""The units the classic presets optimize in."""


@dataclass(frozen=True)
class Preset:
    name: str
    paper: str
    steps: int
    lr: float


PRESETS: dict[str, Preset] = {
    "simonyan": Preset("simonyan", "Simonyan et al. 2014 (CS231n settings)", 100, 25.0),
    "yosinski": Preset("yosinski", "Yosinski et al. 2015 (best setting)", 1000, 25.0),
    "lucid": Preset("lucid", "Olah et al. 2017 (lucid)", 512, 0.05),
}


@dataclass(frozen=True)
class VisualizeResult:
    images: Tensor  # (B, 3, H, W) in [0, 1]
    objective: str  # its repr
    preset: str
    steps: int
    losses: dict[str, float]
    target_probability: list[float] | None = None  # class targets: p(target) per image
    history: list[float] = field(default_factory=list)


def _preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UnknownNameError("preset", name, PRESETS)
    return PRESETS[name]


def _default_size(model: ConvModel) -> int:
    pre = model.preprocess
    return pre.crop or pre.resize or 128


def _objective(
    model: ConvModel,
    target: str | int | None,
    layer: str | None,
    channel_: int | None,
    position: tuple[int, int] | Literal["center"] | None,
    channels: Sequence[int] | None,
) -> tuple[Objective, str | None, int | None]:
    """The objective, the layer a diversity term should compare, and the class index."""
    given = [target is not None, channel_ is not None, channels is not None]
    if sum(given) != 1:
        raise UserInputError(
            "give exactly one of a class (--class), a channel (--layer and --channel) or "
            "channels (--layer and --channels)."
        )
    if target is not None:
        if layer is not None or position is not None:
            raise UserInputError("--layer and --neuron go with --channel, not with --class.")
        if model.classes is None:
            raise UserInputError(
                f"model {model.name!r} has no classes; visualize a channel with --layer and "
                "--channel."
            )
        from convscope.attribute.targets import class_target

        index = class_target(model, target)[0].index
        return class_logit(index), model.default_layer, index
    if layer is None:
        raise UserInputError("--channel and --channels need --layer.")
    model.resolve(layer)
    if channels is not None:
        chosen = [int(c) for c in channels]
        if not chosen:
            raise UserInputError("--channels names no channel.")
        if position is not None:
            raise UserInputError("--neuron goes with one --channel, not with --channels.")
        return total(channel(layer, c, batch=i) for i, c in enumerate(chosen)), layer, None
    assert channel_ is not None
    if position is None:
        return channel(layer, channel_), layer, None
    if position == "center":
        return neuron(layer, channel_), layer, None
    y, x = position
    return neuron(layer, channel_, y, x), layer, None


def _step_scale(size: tuple[int, int]) -> float:
    """The classic presets' step sizes were set at 224×224: per-pixel change stays the same at
    other sizes when the normalized step grows with the square root of the pixel count."""
    return math.sqrt(size[0] * size[1]) / 224


def plan_visualize(
    model: ConvModel,
    *,
    target: str | int | None = None,
    layer: str | None = None,
    channel: int | None = None,
    neuron: tuple[int, int] | Literal["center"] | None = None,
    channels: Sequence[int] | None = None,
    preset: str = "lucid",
    steps: int | None = None,
    size: int | tuple[int, int] | None = None,
    batch: int = 1,
    diversity_weight: float = 0.0,
    lr: float | None = None,
    norm_percentile: float = 0.0,
    seed: int = 0,
) -> tuple[Run, int | None]:
    """The run `visualize` would start (for `--dry-run`), and the target class if any."""
    p = _preset(preset)
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise UserInputError(f"--steps must be at least 1, got {steps!r}.")
    objective, div_layer, index = _objective(model, target, layer, channel, neuron, channels)
    hw = _size(size if size is not None else _default_size(model))
    if layer is not None:
        _check_unit(model, layer, hw, channel, neuron, channels)
    if channels is not None:
        if batch != 1:
            raise UserInputError("--channels makes one image per channel; leave --batch out.")
        batch = len(list(channels))
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise UserInputError(f"--batch must be at least 1, got {batch!r}.")
    if not (math.isfinite(diversity_weight) and diversity_weight >= 0):
        raise UserInputError(f"--diversity must be 0 or more, got {diversity_weight}.")
    if diversity_weight > 0:
        if batch < 2:
            raise UserInputError("--diversity compares images: give --batch 2 or more.")
        if div_layer is None:
            raise UserInputError(
                f"model {model.name} has no default layer to compare images at; give --layer."
            )
        objective = objective + diversity_weight * diversity(div_layer)
    n = p.steps if steps is None else steps
    rate = p.lr if lr is None else lr
    callbacks: list[Callback] = []
    transforms: nn.Module | None
    with seeded(seed):
        if p.name == "lucid":
            param: nn.Module = image_param(hw, batch=batch)
            transforms, optimizer = standard(), "adam"
        else:
            param = ModelSpaceImage(
                IMAGENET, hw, batch=batch, sd=1.0 if p.name == "simonyan" else 0.1
            )
            optimizer = "normalized"
            rate = rate * _step_scale(hw)
            if p.name == "simonyan":
                objective = objective - 1e-3 * l2("imagenet")
                transforms = Roll(16)
                callbacks = [cb.clamp_to_range(), cb.every(10, cb.blur(0.5))]
            else:
                transforms = None
                callbacks = [
                    cb.decay(1e-4),
                    cb.every(4, cb.blur(1.0)),
                    cb.clip_small_norm(norm_percentile),
                    cb.clamp_to_range(),
                ]
    run = Run(
        model,
        objective,
        param.to(model.device),
        transforms=transforms,
        steps=n,
        optimizer=optimizer,
        lr=rate,
        callbacks=callbacks,
    )
    return run, index


def layer_shape(model: ConvModel, layer: str, size: tuple[int, int]) -> tuple[int, ...]:
    """The output shape of `layer` for one image of `size` (a cheap forward of zeros)."""
    from convscope.probe import capture

    x = model.preprocess.normalize(torch.zeros(1, 3, *size, device=model.device))
    return tuple(int(d) for d in capture(model, x, [layer])[layer].shape)


def _check_unit(
    model: ConvModel,
    layer: str,
    size: tuple[int, int],
    channel_: int | None,
    position: tuple[int, int] | Literal["center"] | None,
    channels: Sequence[int] | None,
) -> None:
    """Channels and positions are checked against the layer before any step."""
    shape = layer_shape(model, layer, size)
    c = shape[1]
    for k in [channel_] if channels is None else list(channels):
        if k is not None and not 0 <= k < c:
            raise UserInputError(f"channel {k} is out of range 0..{c - 1} for layer {layer}.")
    if isinstance(position, tuple):
        if len(shape) != 4:
            raise UserInputError(f"layer {layer} has no positions; leave --neuron out.")
        h, w = shape[2], shape[3]
        y, x = position
        if not (0 <= y < h and 0 <= x < w):
            raise UserInputError(
                f"position {y},{x} is outside layer {layer}'s {h}x{w} output at this size "
                f"(y in 0..{h - 1}, x in 0..{w - 1})."
            )


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else size
    if not (isinstance(h, int) and isinstance(w, int) and h >= 16 and w >= 16):
        raise UserInputError(f"--size must be at least 16 pixels, got {size!r}.")
    return h, w


def visualize(
    model: ConvModel,
    *,
    target: str | int | None = None,
    layer: str | None = None,
    channel: int | None = None,
    neuron: tuple[int, int] | Literal["center"] | None = None,
    channels: Sequence[int] | None = None,
    preset: str = "lucid",
    steps: int | None = None,
    size: int | tuple[int, int] | None = None,
    batch: int = 1,
    diversity_weight: float = 0.0,
    lr: float | None = None,
    norm_percentile: float = 0.0,
    seed: int = 0,
    preview_every: int | None = None,
    checkpoint: Any = None,
    resume: bool = False,
    on_progress: ProgressCallback = no_progress,
) -> VisualizeResult:
    """Visualize a class (`target`: a name or index), a channel (`layer`, `channel`), one unit
    (add `neuron`: (y, x) or "center"), or one image per channel (`layer`, `channels`).

    `preset` picks the published settings (see the module docstring); `steps`, `lr` and
    `size` (default: the model's input size) override them. `batch` images of the same
    target, pushed apart by `diversity_weight` × `diversity` (Olah et al. 2017). The same
    `seed` gives the same images."""
    run, index = plan_visualize(
        model,
        target=target,
        layer=layer,
        channel=channel,
        neuron=neuron,
        channels=channels,
        preset=preset,
        steps=steps,
        size=size,
        batch=batch,
        diversity_weight=diversity_weight,
        lr=lr,
        norm_percentile=norm_percentile,
        seed=seed,
    )
    recipe = repr(
        {
            "recipe": "visualize",
            "preset": preset,
            "size": tuple(run.param().shape[-2:]),
            "batch": int(run.param().shape[0]),
            "seed": seed,
        }
    )
    with seeded(seed + 1):
        result: SynthesisResult = run.start(
            task="visualize",
            preview_every=preview_every,
            checkpoint=checkpoint,
            resume=resume,
            recipe=recipe,
            on_progress=on_progress,
        )
    probs = None
    if index is not None:
        with torch.no_grad():
            logits = model(model.preprocess.normalize(result.image.to(model.device)))
        probs = [float(v) for v in logits.float().softmax(dim=1)[:, index]]
    return VisualizeResult(
        result.image,
        repr(run.objective),
        preset,
        result.steps,
        result.losses,
        probs,
        result.history,
    )
