"""Texture synthesis (Gatys, Ecker & Bethge 2015) on the one loop: from noise, an image whose
Gram matrices at several VGG layers match those of an exemplar.

    result = texture(vgg, brick, size=256)
    steps = texture_progression(vgg, brick)        # one texture per growing layer set
    texture_panel(steps)                          # the lecture's figure

- Objective: the style term of `convscope.synthesize.perceptual` alone: the mean over
  `layers` of ||G − A||² / ||A||², with G = F Fᵀ / (H·W), so the output may be any size,
  larger than the exemplar too (the Gram matrices average over positions).
- Start: the exemplar's mean colour plus N(0, 0.1²) noise; L-BFGS (lr 1, one evaluation per
  step), the image clamped into [0, 1] after each step.
- Network: VGG16 with average pooling instead of max pooling, as in the paper (`pooling`);
  the forward stops after the deepest layer of `layers`.
- The exemplar is used at its own size (`style_size` resizes its long side): the Gram matrices
  describe features at the exemplar's scale, and the output repeats them at that scale.
- `seamless`: the image is rolled by a random offset each step (`transforms.Roll`), so the
  network sees its wrap-around edges as interior: the result tiles without seams.
- The progression (`texture_progression`) is the paper's Figure 2: matching relu1_1 alone
  gives coloured noise with the exemplar's colour statistics; each deeper layer added brings
  larger structures, up to whole bricks or blades of grass at relu5_1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from convscope.errors import UserInputError, check_number, check_whole
from convscope.events import Progress, ProgressCallback, no_progress
from convscope.models.base import ConvModel, check_image_batch
from convscope.models.pooling import with_pooling
from convscope.synthesize import callbacks as cb
from convscope.synthesize.octaves import resize
from convscope.synthesize.optimize import Run, SynthesisProgress, seeded
from convscope.synthesize.params import ImageParam, PixelImage
from convscope.synthesize.perceptual import (
    STYLE_LAYERS,
    StyleTarget,
    check_size,
    perceptual,
    style_grams,
)
from convscope.synthesize.recipes.style import LR, choose_precision, output_size
from convscope.synthesize.transforms import Roll

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "TextureResult",
    "plan_texture",
    "texture",
    "texture_panel",
    "texture_progression",
]

NOISE_SD = 0.1


@dataclass(frozen=True)
class TextureResult:
    image: Tensor  # (3, H, W) in [0, 1]
    layers: list[str]
    losses: dict[str, float]  # the last step's
    steps: int
    exemplar: Tensor  # (3, h, w) in [0, 1], as matched (after `style_size`)
    model: str
    precision: str
    history: list[float] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "layers": self.layers,
            "size": [int(self.image.shape[-2]), int(self.image.shape[-1])],
            "steps": self.steps,
            "precision": self.precision,
            "style_loss": round(self.losses.get("style", float("nan")), 6),
        }


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in pair):
        raise UserInputError(f"--size must be a whole number of pixels, got {size!r}.")
    h, w = int(pair[0]), int(pair[1])
    if min(h, w) < 16:
        raise UserInputError(f"--size must be at least 16 pixels, got {size!r}.")
    return h, w


def _exemplar(image: Tensor, style_size: int | None) -> Tensor:
    x = check_image_batch(image, "the style image")
    if x.shape[0] != 1:
        raise UserInputError(f"texture takes one style image, got a batch of {x.shape[0]}.")
    x = x.detach().float().cpu().clamp(0.0, 1.0)
    if style_size is not None:
        if isinstance(style_size, bool) or not isinstance(style_size, int) or style_size < 16:
            raise UserInputError(f"--style-size must be at least 16 pixels, got {style_size!r}.")
        x = resize(x, output_size((int(x.shape[-2]), int(x.shape[-1])), style_size))
    return x.clamp(0.0, 1.0)


def plan_texture(
    model: ConvModel,
    image: Tensor,
    *,
    layers: Sequence[str] = STYLE_LAYERS,
    size: int | tuple[int, int] = 256,
    style_size: int | None = None,
    steps: int = 300,
    optimizer: str = "lbfgs",
    lr: float | None = None,
    pooling: str = "avg",
    seamless: bool = False,
    precision: str = "auto",
    seed: int = 0,
) -> Run:
    """Check the arguments and plan the run (see `texture`), before any step."""
    names = [str(n) for n in layers]
    if not names:
        raise UserInputError("--layers names no layer; give layers like relu1_1,relu2_1.")
    for n in names:
        model.resolve(n)
    hw = _hw(size)
    exemplar = _exemplar(image, style_size)
    check_whole(steps, "--steps")
    check_whole(seed, "--seed", 0)
    if optimizer not in LR:
        raise UserInputError(f"--optimizer must be lbfgs or adam, got {optimizer!r}.")
    rate = LR[optimizer] if lr is None else check_number(lr, "--lr", zero=False)
    chosen = choose_precision(precision, model.device)
    net = with_pooling(model, pooling)
    check_size(net, names, hw, "texture")
    check_size(net, names, (int(exemplar.shape[-2]), int(exemplar.shape[-1])), "style image")
    grams = style_grams(net, [exemplar], names)
    objective = perceptual(
        content=None,
        styles=[StyleTarget(grams)],
        content_weight=0.0,
        style_weight=1.0,
        tv_weight=0.0,
    )
    mean = exemplar.mean(dim=(-2, -1), keepdim=True)
    with seeded(seed):
        start = (mean + NOISE_SD * torch.randn(1, 3, *hw)).clamp(0.0, 1.0)
    param = ImageParam(PixelImage(hw, init=start), decorrelate=False, activation="none")
    return Run(
        net,
        objective,
        param.to(net.device),
        transforms=Roll(max(hw)) if seamless else None,
        steps=steps,
        optimizer=optimizer,
        lr=rate,
        callbacks=[cb.clamp_to_range()],
        precision=chosen,
    )


def texture(
    model: ConvModel,
    image: Tensor,
    *,
    layers: Sequence[str] = STYLE_LAYERS,
    size: int | tuple[int, int] = 256,
    style_size: int | None = None,
    steps: int = 300,
    optimizer: str = "lbfgs",
    lr: float | None = None,
    pooling: str = "avg",
    seamless: bool = False,
    precision: str = "auto",
    seed: int = 0,
    preview_every: int | None = None,
    on_progress: ProgressCallback = no_progress,
) -> TextureResult:
    """A texture like `image` (3, h, w) or (1, 3, h, w) in [0, 1] (see the module docstring).

    Args:
        layers: the layers whose Gram matrices are matched (names or aliases).
        size: the output's side (or (H, W)); it may exceed the exemplar's.
        style_size: resize the exemplar's long side to this first (default: as given).
        steps, optimizer, lr: "lbfgs" (lr 1) or "adam" (lr 0.02).
        pooling: "avg" (the paper's) or "max".
        seamless: make the result tile without seams.
        precision: "auto" (bfloat16 where native), "fp32" or "bf16".
        seed: the noise the texture starts from; the same seed, the same texture.
    """
    run = plan_texture(
        model,
        image,
        layers=layers,
        size=size,
        style_size=style_size,
        steps=steps,
        optimizer=optimizer,
        lr=lr,
        pooling=pooling,
        seamless=seamless,
        precision=precision,
        seed=seed,
    )
    with seeded(seed + 1):
        result = run.start(task="texture", on_progress=on_progress, preview_every=preview_every)
    return TextureResult(
        result.image[0],
        [str(n) for n in layers],
        result.losses,
        result.steps,
        _exemplar(image, style_size)[0],
        model.name,
        run.precision,
        result.history,
    )


def texture_progression(
    model: ConvModel,
    image: Tensor,
    *,
    layers: Sequence[str] = STYLE_LAYERS,
    on_progress: ProgressCallback = no_progress,
    **options: Any,
) -> list[TextureResult]:
    """One texture per growing layer set: `layers[:1]`, `layers[:2]`, …, all of them (the
    same seed and options for each; see `texture`)."""
    names = [str(n) for n in layers]
    if not names:
        raise UserInputError("--layers names no layer; give layers like relu1_1,relu2_1.")
    for n in names:
        model.resolve(n)
    out = []
    for k in range(1, len(names) + 1):

        def emit(event: Progress, k: int = k) -> None:
            if isinstance(event, SynthesisProgress):
                event = dataclasses.replace(event, task=f"texture ≤ {names[k - 1]}")
            on_progress(event)

        out.append(texture(model, image, layers=names[:k], on_progress=emit, **options))
    return out


def texture_panel(results: Sequence[TextureResult], *, title: str | None = None) -> Image.Image:
    """The source beside each texture, in one row, labelled with the layers matched."""
    from convscope.render.grids import image_grid, titled

    if not results:
        raise UserInputError("there are no textures to show.")
    first = results[0]
    images = [first.exemplar, *(r.image for r in results)]
    labels = ["source"]
    for r in results:
        labels.append(r.layers[0] if len(r.layers) == 1 else f"{r.layers[0]} … {r.layers[-1]}")
    side = int(max(max(r.image.shape[-2:]) for r in results))
    grid = image_grid(images, labels=labels, ncol=len(images), tile=max(side, 160), label_height=22)
    if title is None:
        title = f"Texture synthesis ({first.model}; Gatys et al. 2015): matching deeper layers"
    return titled(grid, title)
