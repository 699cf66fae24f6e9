"""Feature inversion (Mahendran & Vedaldi 2015): which image has these features?

    result = invert(model, image, ["relu2_2", "relu3_3", "relu4_3", "relu5_3"])
    result.layers[0].psnr, result.layers[0].feature_error
    inversion_panel(result)        # the original, then one reconstruction per layer

For each layer, from a random start, gradient ascent on

    −||Φ(x) − Φ₀||² / ||Φ₀||²  −  λα · R_α(x)  −  λV · R_V²(x)

(`feature_match`, `alpha_norm(6)`, `total_variation(beta=2)`), the paper's normalized loss:
the feature error relative to the target's norm, and the two priors divided by their value on
a typical natural image, with B = 80 (the typical size of a pixel value, in 0–255 levels from
the mean colour) for the α-norm and V = B/6.5 for the variation, so that λα and λV are free of
units and of the model's input scaling.

Settings (the paper's are a guide; these are the ones that work here):

- The image is the model's view of it (`model.preprocess.geometry`, 224×224 for VGG16; `size`
  makes it smaller), optimized as pixels at that size, the model's normalization applied in
  the loop only; each step projects it back into [0, 1].
- The start: the model's mean colour plus Gaussian noise of σ 0.1, the same for every layer.
- Adam at 0.05 with a cosine schedule, 200 steps (the paper: 200 steps of momentum SGD).
- λV grows with the layer's depth, as in the paper, here in proportion to the stride of the
  layer's units: λV = 0.0025 × stride (0.005 at relu2_2, 0.04 at relu5_3). A deep layer
  constrains the pixels less, so the prior must do more; with a smaller λV relu5_3's
  reconstruction fills with coloured high-frequency patterns, with a larger one the early
  layers lose detail they do encode. `tv` sets one λV for every layer instead.
- λα = 1e-5 (the paper's α = 6 prior against values far outside a natural range; with the
  image also projected into [0, 1] it only touches the values near the ends of the range).

What it shows: early layers give the image back almost exactly (PSNR well above 30 dB at
relu2_2), late ones keep the layout and the parts (eyes, nose) but lose colour and detail.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from convscope.errors import UserInputError
from convscope.events import ProgressCallback, no_progress
from convscope.models.base import ConvModel, Preprocess, check_image_batch
from convscope.synthesize import callbacks as cb
from convscope.synthesize.objectives import alpha_norm, feature_match, total_variation
from convscope.synthesize.optimize import Run, seeded
from convscope.synthesize.params import ImageParam, PixelImage

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "ALPHA",
    "TV_PER_STRIDE",
    "InversionPlan",
    "InversionResult",
    "LayerInversion",
    "feature_error",
    "inversion_panel",
    "invert",
    "plan_invert",
    "psnr",
]

ALPHA = 1e-5
"""λα, the weight of the normalized α-norm prior (α = 6)."""
TV_PER_STRIDE = 0.0025
"""λV per pixel of the layer's stride: λV = TV_PER_STRIDE × stride."""
B = 80.0
"""Mahendran & Vedaldi's typical pixel value, in 0–255 levels from the mean colour."""
V = B / 6.5
"""Their typical difference between neighbouring pixels, in levels."""
NO_POSITIONS_STRIDE = 32
"""The stride taken for a layer without positions (a linear layer)."""
START_SD = 0.1


def psnr(image: Tensor, reference: Tensor) -> float:
    """The peak signal-to-noise ratio of `image` against `reference`, both in [0, 1], in dB
    (capped at 100 dB for identical images)."""
    mse = float((image.float() - reference.float()).pow(2).mean())
    return 10.0 * math.log10(1.0 / max(mse, 1e-10))


def feature_error(got: Tensor, want: Tensor) -> float:
    """||Φ(x) − Φ₀|| / ||Φ₀||: the features' relative error (not squared)."""
    return float((got.float() - want.float()).norm() / want.float().norm().clamp(min=1e-12))


@dataclass(frozen=True)
class LayerInversion:
    layer: str  # as given
    image: Tensor  # (3, H, W) in [0, 1]: the reconstruction
    psnr: float  # against the original, in dB
    feature_error: float  # ||Φ(x) − Φ₀|| / ||Φ₀||
    tv_weight: float  # the λV used
    steps: int
    losses: dict[str, float] = field(default_factory=dict)  # the last step's, by term


@dataclass(frozen=True)
class InversionResult:
    original: Tensor  # (3, H, W) in [0, 1]: the model's view of the image
    layers: list[LayerInversion]
    model: str

    def report(self) -> dict[str, Any]:
        """The numbers, as JSON-ready values."""
        h, w = int(self.original.shape[-2]), int(self.original.shape[-1])
        return {
            "model": self.model,
            "size": [h, w],
            "layers": [
                {
                    "layer": r.layer,
                    "psnr_db": round(r.psnr, 3),
                    "feature_error": round(r.feature_error, 5),
                    "tv_weight": r.tv_weight,
                    "steps": r.steps,
                }
                for r in self.layers
            ],
        }


@dataclass
class InversionPlan:
    """What `invert` will run: the target image and, per layer, its features and its run."""

    model: ConvModel
    image: Tensor  # (1, 3, H, W) in [0, 1], on the CPU
    layers: list[str]
    targets: list[Tensor]  # Φ₀ of each layer
    tv_weights: list[float]
    runs: list[Run]


def _size(size: int | None) -> int | None:
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 16:
        raise UserInputError(f"--size must be at least 16 pixels, got {size!r}.")
    return size


def _view(model: ConvModel, image: Tensor, size: int | None) -> Tensor:
    """The model's view of the image (its geometry), or a `size`×`size` centre crop."""
    x = check_image_batch(image, "the image")
    if x.shape[0] != 1:
        raise UserInputError(f"invert takes one image, got a batch of {x.shape[0]}.")
    x = x.detach().float().cpu()
    if size is None:
        return model.preprocess.geometry(x)
    return Preprocess(resize=size, crop=size).geometry(x).clamp(0.0, 1.0)


def _strides(model: ConvModel, layers: Sequence[str], size: int) -> list[int]:
    from convscope.probe import receptive_fields

    fields = receptive_fields(model, list(layers), size)
    out = []
    for layer in layers:
        rf = fields.get(layer)
        out.append(NO_POSITIONS_STRIDE if rf is None else max(rf.stride))
    return out


def plan_invert(
    model: ConvModel,
    image: Tensor,
    layers: Sequence[str],
    *,
    size: int | None = None,
    steps: int = 200,
    lr: float = 0.05,
    tv: float | None = None,
    alpha: float = ALPHA,
    seed: int = 0,
) -> InversionPlan:
    """Check the arguments, compute the target features and plan one run per layer (see
    `invert`), before any step."""
    names = [str(layer) for layer in layers]
    if not names:
        raise UserInputError("--layers names no layer; give layers like relu2_2,relu5_3.")
    for layer in names:
        model.resolve(layer)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UserInputError(f"--steps must be at least 1, got {steps!r}.")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise UserInputError(f"--lr must be a positive number, got {lr!r}.")
    if tv is not None and not (isinstance(tv, (int, float)) and math.isfinite(tv) and tv >= 0):
        raise UserInputError(f"--tv must be 0 or more, got {tv!r}.")
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
        raise UserInputError(f"--alpha must be 0 or more, got {alpha!r}.")
    target = _view(model, image, _size(size))
    h, w = int(target.shape[-2]), int(target.shape[-1])
    from convscope.probe import capture

    device = model.device
    x0 = model.preprocess.normalize(target.to(device))
    try:
        feats = capture(model, x0, names)
    except RuntimeError as exc:
        raise UserInputError(
            f"the image ({w}x{h}) is too small for these layers: {str(exc).strip().splitlines()[0]}"
        ) from None
    targets = [feats[layer].clone() for layer in names]  # out of inference mode
    strides = _strides(model, names, min(h, w))
    pre = model.preprocess
    # The normalizations of the priors: B in the model's units for the α-norm (model space),
    # V in [0, 1] pixels for the variation (which `total_variation` measures in pixels), and
    # × 3 as the paper's norms sum over the colour channels where ours average.
    b_model = (B / 255.0) * float(pre.scale) / (sum(abs(s) for s in pre.std) / 3)
    v_pixels = V / 255.0
    with seeded(seed):
        noise = torch.randn(1, 3, h, w) * START_SD
    mean = pre.denormalize(torch.zeros(1, 3, 1, 1)).clamp(0.0, 1.0)
    start = (mean + noise).clamp(0.0, 1.0)
    runs, weights = [], []
    for layer, phi0, stride in zip(names, targets, strides, strict=True):
        lam_v = TV_PER_STRIDE * stride if tv is None else float(tv)
        objective = (
            -feature_match(layer, phi0)
            - (alpha * 3 / b_model**6) * alpha_norm(6.0)
            - (lam_v * 3 / v_pixels**2) * total_variation(beta=2.0)
        )
        param = ImageParam(PixelImage((h, w), init=start), decorrelate=False, activation="none")
        runs.append(
            Run(
                model,
                objective,
                param.to(device),
                steps=steps,
                optimizer="adam",
                lr=float(lr),
                schedule="cosine",
                callbacks=[cb.clamp_to_range()],
            )
        )
        weights.append(lam_v)
    return InversionPlan(model, target, names, targets, weights, runs)


def invert(
    model: ConvModel,
    image: Tensor,
    layers: Sequence[str],
    *,
    size: int | None = None,
    steps: int = 200,
    lr: float = 0.05,
    tv: float | None = None,
    alpha: float = ALPHA,
    seed: int = 0,
    preview_every: int | None = None,
    on_progress: ProgressCallback = no_progress,
) -> InversionResult:
    """Reconstruct `image` (3, H, W) or (1, 3, H, W) in [0, 1] from the features of each of
    `layers` (see the module docstring for the method and its settings).

    Args:
        size: invert a `size`×`size` centre crop instead of the model's view of the image.
        steps, lr: Adam's steps (cosine schedule) and learning rate, per layer.
        tv: one λV for every layer (default: 0.0025 × the layer's stride).
        alpha: λα.
        seed: the random start (the same for every layer); the same seed, the same images.
        preview_every: attach the current image to every N-th step's progress event.
    """
    plan = plan_invert(
        model, image, layers, size=size, steps=steps, lr=lr, tv=tv, alpha=alpha, seed=seed
    )
    from convscope.probe import capture

    original = plan.image
    done: list[LayerInversion] = []
    for layer, run, phi0, lam_v in zip(
        plan.layers, plan.runs, plan.targets, plan.tv_weights, strict=True
    ):
        with seeded(seed + 1):
            result = run.start(
                task=f"invert {layer}", preview_every=preview_every, on_progress=on_progress
            )
        x = result.image
        phi = capture(model, model.preprocess.normalize(x.to(model.device)), [layer])[layer]
        done.append(
            LayerInversion(
                layer,
                x[0],
                psnr(x, original),
                feature_error(phi, phi0),
                lam_v,
                result.steps,
                result.losses,
            )
        )
    return InversionResult(original[0], done, model.name)


def inversion_panel(result: InversionResult, *, title: str | None = None) -> Image.Image:
    """The lecture's panel: the original, then each layer's reconstruction, in one row, each
    labelled with its PSNR and its feature error."""
    from convscope.render.grids import image_grid, titled

    images = [result.original, *(r.image for r in result.layers)]
    labels = ["original"] + [
        f"{r.layer}: {r.psnr:.1f} dB, err {r.feature_error:.2f}" for r in result.layers
    ]
    side = int(max(result.original.shape[-2:]))
    tile = max(side, 192)
    grid = image_grid(images, labels=labels, ncol=len(images), tile=tile, label_height=22)
    if title is None:
        title = f"Feature inversion ({result.model}; Mahendran & Vedaldi 2015)"
    return titled(grid, title)
