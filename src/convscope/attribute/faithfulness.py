"""Is a saliency map faithful to the model? Two standard tests.

**Deletion / insertion** (Petsiuk, Das & Saenko 2018, "RISE"). Pixels are taken in order of
decreasing saliency, in equal steps. *Deletion* replaces them by a baseline (by default, as
in RISE, a model input of zero: the mean colour the preprocessing subtracts; or a blurred copy
of the image, or the image's mean colour) and follows the target's probability: a faithful
map removes the evidence first, so the probability falls fast and the area under the curve
(AUC, trapezoid rule over the fraction of pixels, 0..1) is *low*.
*Insertion* starts from the blurred image and puts the original pixels back in the same order:
a faithful map restores the evidence first, so its AUC is *high*. Both are compared with the
same curves for random maps (`random_baseline`), the baseline every method has to beat.
Pixels are ranked and changed in 8×8 cells by default (region perturbation, Samek et al.
2017) and the random maps are smooth noise, so that every map, random or not, deletes
contiguous regions: the curves then compare *where* maps point, not how scattered they are
(networks are far more sensitive to damage spread thinly over the whole image).

Images are (3, H, W) RGB in [0, 1] *as the model sees them* (after `model.preprocess.geometry`),
as for every method of `convscope.attribute`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from convscope.attribute.maps import check_map, gaussian_smooth
from convscope.attribute.methods import AttributionFn, method_function
from convscope.attribute.targets import (
    ClassTarget,
    NeuronTarget,
    Target,
    class_target,
    target_scores,
)
from convscope.errors import UnknownNameError, UserInputError
from convscope.events import Progress, ProgressCallback, no_progress
from convscope.models.base import ConvModel, check_image_batch

__all__ = [
    "BASELINES",
    "RANDOM",
    "AttributionFn",
    "Baseline",
    "Curves",
    "FaithfulnessReport",
    "FaithfulnessRow",
    "attribution_maps",
    "auc",
    "blurred",
    "check_one_image",
    "default_patch",
    "deletion_insertion",
    "evaluate",
    "mean_curves",
    "random_baseline",
    "random_map",
    "report_table",
    "resolve_targets",
]

Baseline = Literal["blur", "zero", "mean"]
BASELINES: tuple[str, ...] = ("blur", "zero", "mean")


# ---- helpers ----------------------------------------------------------------------------------
def check_one_image(image: Tensor) -> Tensor:
    """One (3, H, W) image (a batch of one is unwrapped), detached."""
    x = check_image_batch(image, "the image")
    if x.shape[0] != 1:
        raise UserInputError(f"expected one image (3, H, W), got a batch of {x.shape[0]}.")
    return x[0].detach()


def _check_steps(steps: int) -> None:
    if not (isinstance(steps, int) and steps >= 1):
        raise UserInputError(f"steps must be a positive integer, got {steps!r}.")


def _check_batch_size(batch_size: int) -> None:
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise UserInputError(f"batch size must be a positive integer, got {batch_size!r}.")


def auc(fractions: Tensor, values: Tensor) -> float:
    """Area under a curve by the trapezoid rule (a constant curve c over 0..1 gives c)."""
    return float(torch.trapezoid(values.double(), fractions.double()))


def blurred(image: Tensor, sigma: float = 0.05) -> Tensor:
    """A Gaussian blur of a (3, H, W) image; `sigma` is a fraction of the short side (5 % by
    default, i.e. 11 px at 224: strong enough that ImageNet classes are hard to tell)."""
    if not (math.isfinite(sigma) and sigma >= 0):
        raise UserInputError(f"blur sigma must be a non-negative fraction, got {sigma!r}.")
    img = image.detach().float()
    px = sigma * min(img.shape[-2:])
    return torch.stack([gaussian_smooth(c, px) for c in img.cpu()]).to(image.device)


def _baseline_image(model: ConvModel, image: Tensor, baseline: str, blur_sigma: float) -> Tensor:
    """What deleted pixels become, as a (3, H, W) image in [0, 1] (see `deletion_insertion`)."""
    if baseline == "blur":
        return blurred(image, blur_sigma)
    if baseline == "zero":
        # The image whose model input is 0: x * scale = mean.
        pre = model.preprocess
        mean = torch.tensor(pre.mean, dtype=image.dtype, device=image.device) / pre.scale
        return mean.view(3, 1, 1).expand_as(image).clone()
    if baseline == "mean":
        return image.mean(dim=(1, 2), keepdim=True).expand_as(image).clone()
    raise UnknownNameError("baseline", str(baseline), BASELINES)


def _ranks(saliency: Tensor, patch: int) -> tuple[Tensor, int]:
    """The (H, W) rank of every pixel's cell in order of decreasing mean saliency, and the
    number of cells. Cells are patch×patch squares (smaller at the right and bottom edges when
    the size is not a multiple); ties go to the cell that comes first in row-major order, so
    the order is deterministic."""
    h, w = saliency.shape
    s = saliency.double()
    if patch > 1:
        s = F.avg_pool2d(s[None, None], patch, ceil_mode=True)[0, 0]
    order = torch.argsort(-s.flatten(), stable=True)
    cell_rank = torch.empty_like(order)
    cell_rank[order] = torch.arange(order.numel())
    if patch == 1:
        return cell_rank.view(h, w), order.numel()
    ys = torch.arange(h) // patch
    xs = torch.arange(w) // patch
    cells = cell_rank.view(s.shape)
    return cells[ys][:, xs], order.numel()


def default_patch(size: tuple[int, int]) -> int:
    """The ranking cell used when `patch` is None: 1/28 of the short side (8 px at 224), 1 px
    for images under 56 px."""
    return max(1, round(min(size) / 28))


@torch.inference_mode()
def _scores(
    model: ConvModel, batch: Tensor, target: Target, batch_size: int
) -> Tensor:  # (N,) target probabilities for (N, 3, H, W) images in [0, 1]
    out = []
    for i in range(0, batch.shape[0], batch_size):
        chunk = batch[i : i + batch_size]
        x = model.preprocess.normalize(chunk).to(model.device)
        out.append(target_scores(model, x, [target] * chunk.shape[0], prob=True).float().cpu())
    return torch.cat(out)


# ---- deletion / insertion ---------------------------------------------------------------------
@dataclass(frozen=True)
class Curves:
    """Deletion and insertion curves of one map: the target's probability (for a neuron
    target, its activation) after each step."""

    fractions: Tensor  # (steps + 1,) fraction of pixels removed / inserted, 0..1
    deletion: Tensor  # (steps + 1,)
    insertion: Tensor  # (steps + 1,)
    deletion_auc: float  # lower is better
    insertion_auc: float  # higher is better

    def to_dict(self) -> dict[str, Any]:
        return {
            "fractions": [round(float(v), 6) for v in self.fractions],
            "deletion": [round(float(v), 6) for v in self.deletion],
            "insertion": [round(float(v), 6) for v in self.insertion],
            "deletion_auc": self.deletion_auc,
            "insertion_auc": self.insertion_auc,
        }


def _curves(fractions: Tensor, deletion: Tensor, insertion: Tensor) -> Curves:
    return Curves(
        fractions, deletion, insertion, auc(fractions, deletion), auc(fractions, insertion)
    )


def mean_curves(curves: Sequence[Curves]) -> Curves:
    """The pointwise mean of curves with the same fractions (its AUCs are the mean AUCs)."""
    if not curves:
        raise UserInputError("there are no curves to average.")
    fr = curves[0].fractions
    if any(c.fractions.shape != fr.shape or not torch.allclose(c.fractions, fr) for c in curves):
        raise UserInputError("curves with different steps cannot be averaged.")
    dele = torch.stack([c.deletion for c in curves]).mean(0)
    ins = torch.stack([c.insertion for c in curves]).mean(0)
    return _curves(fr, dele, ins)


def deletion_insertion(
    model: ConvModel,
    image: Tensor,
    target: Target,
    saliency: Tensor,
    *,
    steps: int = 32,
    baseline: Baseline = "zero",
    batch_size: int = 16,
    blur_sigma: float = 0.05,
    patch: int | None = None,
) -> Curves:
    """Deletion and insertion curves of `saliency` for `model`'s `target` on `image`.

    Args:
        image: (3, H, W) RGB in [0, 1] as the model sees it.
        target: a `ClassTarget` (its softmax probability is followed) or a `NeuronTarget`.
        saliency: (H, W) map, larger = more important (resized to the image if needed).
        steps: number of equal steps from 0 to all pixels; steps + 1 points per curve.
        baseline: what deleted pixels become: "zero" (a model input of zero, i.e. the colour
            the preprocessing subtracts: ImageNet's mean colour for ImageNet models, RISE's
            choice; black for models that subtract nothing), "blur" (a Gaussian blur of the
            image: removes detail but keeps colour and shape, so it is gentler) or "mean"
            (the image's own mean colour). Insertion always starts from the blur.
        batch_size: images per forward pass.
        blur_sigma: the blur's standard deviation as a fraction of the short side.
        patch: pixels are ranked and changed in patch×patch cells, by the cell's mean
            saliency (region perturbation, Samek et al. 2017); None = `default_patch`, 8 px at
            224. Per-pixel order (patch=1) mostly measures how the network reacts to
            scattered single-pixel noise, which makes speckled maps look worse than random
            ones; cells give every map, random maps included, the same kind of artifacts.
    """
    img = check_one_image(image)
    _check_steps(steps)
    _check_batch_size(batch_size)
    _, h, w = img.shape
    s = check_map(saliency, (h, w))
    base = _baseline_image(model, img, baseline, blur_sigma)
    blur = base if baseline == "blur" else blurred(img, blur_sigma)
    if patch is None:
        patch = default_patch((h, w))
    if not (isinstance(patch, int) and 1 <= patch <= min(h, w)):
        raise UserInputError(f"patch must be 1..{min(h, w)} px, got {patch!r}.")
    ranks, cells = _ranks(s, patch)
    ranks = ranks.view(1, 1, h, w).to(img.device)
    fractions = torch.linspace(0.0, 1.0, steps + 1)
    counts = (fractions * cells).round().long().to(img.device)
    scores = []
    # Build the modified images a chunk at a time: deletion and insertion images of the same
    # steps go into one forward batch.
    per = max(1, batch_size // 2)
    for i in range(0, steps + 1, per):
        changed = ranks < counts[i : i + per].view(-1, 1, 1, 1)  # (b, 1, H, W)
        dele = torch.where(changed, base, img)
        ins = torch.where(changed, img, blur)
        both = _scores(model, torch.cat([dele, ins]), target, batch_size)
        scores.append(both.view(2, -1))
    curve = torch.cat(scores, dim=1)  # (2, steps + 1)
    return _curves(fractions, curve[0], curve[1])


def random_map(
    size: tuple[int, int], *, smooth: float = 0.08, generator: torch.Generator | None = None
) -> Tensor:
    """An (H, W) random map: uniform noise blurred with a Gaussian of σ = `smooth` × the short
    side (0 = independent pixels), drawn from `generator`."""
    if not (math.isfinite(smooth) and 0 <= smooth < 1):
        raise UserInputError(f"random-map smoothness must be a fraction in [0, 1), got {smooth}.")
    noise = torch.rand(size, generator=generator)
    return gaussian_smooth(noise, smooth * min(size))


def random_baseline(
    model: ConvModel,
    image: Tensor,
    target: Target,
    *,
    maps: int = 3,
    seed: int = 0,
    smooth: float = 0.08,
    steps: int = 32,
    baseline: Baseline = "zero",
    batch_size: int = 16,
    blur_sigma: float = 0.05,
    patch: int | None = None,
) -> Curves:
    """The mean deletion/insertion curves of `maps` random maps (`random_map`, from a
    generator seeded with `seed`): the baseline a saliency method has to beat.

    The random maps are smooth by default (σ = 8 % of the side, blobs about the size of a
    Grad-CAM cell), so that, like real maps, they delete contiguous regions and differ from
    them only in *where* they point. How much a network's probability falls depends strongly
    on how scattered the deleted pixels are: with independent random pixels (`smooth=0`) the
    damage is spread over the whole image, which ImageNet networks find much more
    destructive than losing a contiguous part of the object, so such a baseline mostly
    measures that sensitivity."""
    img = check_one_image(image)
    if not (isinstance(maps, int) and maps >= 1):
        raise UserInputError(f"the number of random maps must be positive, got {maps!r}.")
    gen = torch.Generator().manual_seed(seed)
    _, h, w = img.shape
    curves = [
        deletion_insertion(
            model,
            img,
            target,
            random_map((h, w), smooth=smooth, generator=gen),
            steps=steps,
            baseline=baseline,
            batch_size=batch_size,
            blur_sigma=blur_sigma,
            patch=patch,
        )
        for _ in range(maps)
    ]
    return mean_curves(curves)


# ---- evaluation over images and methods -------------------------------------------------------
@dataclass(frozen=True)
class FaithfulnessRow:
    image: str
    method: str  # "random" for the baseline
    target: str
    deletion_auc: float  # lower is better
    insertion_auc: float  # higher is better


RANDOM = "random"


@dataclass(frozen=True)
class FaithfulnessReport:
    """Rows (image, method, target, AUCs), random rows included, and every curve."""

    rows: tuple[FaithfulnessRow, ...]
    curves: Mapping[tuple[str, str], Curves]  # (image, method) → curves
    steps: int
    baseline: str
    maps: Mapping[tuple[str, str], Tensor] = field(default_factory=dict)  # (image, method) → map

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(r.method for r in self.rows))

    def curves_for(self, image: str) -> dict[str, Curves]:
        """Method (and "random") → curves of one image."""
        found = {m: c for (i, m), c in self.curves.items() if i == image}
        if not found:
            raise UnknownNameError("image", image, dict.fromkeys(i for i, _ in self.curves))
        return found

    def mean_curves(self) -> dict[str, Curves]:
        """Per method (and "random"), the curves averaged over the images."""
        return {
            m: mean_curves([c for (_, mm), c in self.curves.items() if mm == m])
            for m in self.methods
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "baseline": self.baseline,
            "rows": [
                {
                    "image": r.image,
                    "method": r.method,
                    "target": r.target,
                    "deletion_auc": round(r.deletion_auc, 6),
                    "insertion_auc": round(r.insertion_auc, 6),
                }
                for r in self.rows
            ],
            "curves": [
                {"image": i, "method": m, **c.to_dict()} for (i, m), c in self.curves.items()
            ],
        }


def _target_name(model: ConvModel, target: Target) -> str:
    if isinstance(target, ClassTarget):
        if model.classes is not None and 0 <= target.index < len(model.classes):
            return model.classes[target.index]
        return str(target.index)
    return f"{target.layer}:{target.channel}"


def _as_images(images: Tensor | Sequence[Tensor]) -> list[Tensor]:
    """(3, H, W) images, possibly of different sizes."""
    if isinstance(images, Tensor):
        return list(check_image_batch(images).detach().unbind(0))
    items = [check_image_batch(im, "each image") for im in images]
    if not items:
        raise UserInputError("no images were given.")
    return [im for t in items for im in t.detach().unbind(0)]


def resolve_targets(
    model: ConvModel, batch: Tensor, target: str | int | Target | None
) -> list[Target]:
    """One target per image of `batch` ((B, 3, H, W) in [0, 1]): a class name or index, a
    `Target`, or None for each image's top prediction."""
    if isinstance(target, ClassTarget | NeuronTarget):
        return [target] * batch.shape[0]
    x = model.preprocess.normalize(batch).to(model.device)
    return list(class_target(model, target, x))


def attribution_maps(
    model: ConvModel,
    batch: Tensor,
    targets: Sequence[Target],
    fn: AttributionFn,
    options: Mapping[str, Any] | None = None,
) -> Tensor:
    """(B, H, W) non-negative maps of `fn` on the CPU, checked."""
    maps = fn(model, batch.to(model.device), list(targets), **dict(options or {}))
    if not isinstance(maps, Tensor) or maps.dim() != 3 or maps.shape[0] != batch.shape[0]:
        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise UserInputError(f"the method returned {shape}, not (B, H, W) maps.")
    return maps.detach().float().cpu()


def evaluate(
    model: ConvModel,
    images: Tensor | Sequence[Tensor],
    methods: Sequence[str | AttributionFn],
    *,
    target: str | int | Target | None = None,
    names: Sequence[str] | None = None,
    steps: int = 32,
    baseline: Baseline = "zero",
    batch_size: int = 16,
    random_maps: int = 3,
    random_smooth: float = 0.08,
    seed: int = 0,
    blur_sigma: float = 0.05,
    patch: int | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    registry: Mapping[str, AttributionFn] | None = None,
    on_progress: ProgressCallback = no_progress,
) -> FaithfulnessReport:
    """Deletion and insertion AUCs of every method on every image, plus the random baseline.

    Args:
        images: (B, 3, H, W) or a list of (3, H, W) (sizes may differ), RGB in [0, 1] as
            the model sees them.
        methods: names in `convscope.attribute.METHODS` (or `registry`), or callables.
        target: a class name or index, a `Target`, or None for each image's top class.
        names: labels of the images in the report (default "image 0", "image 1", …).
        options: per-method keyword options, e.g. {"occlusion": {"window": 32}}.
        random_maps, random_smooth: how many random maps are averaged for the baseline rows
            (method "random"), and their smoothness (see `random_baseline`).
    """
    seen = _as_images(images)
    _check_steps(steps)
    _check_batch_size(batch_size)
    if baseline not in BASELINES:
        raise UnknownNameError("baseline", str(baseline), BASELINES)
    resolved = [method_function(m, registry) for m in methods]
    if not resolved:
        raise UserInputError("no methods were given.")
    labels = list(names) if names is not None else [f"image {i}" for i in range(len(seen))]
    if len(labels) != len(seen):
        raise UserInputError(f"got {len(labels)} names for {len(seen)} images.")
    if len(set(labels)) != len(labels):
        raise UserInputError("the names of the images must be different.")
    targets = [resolve_targets(model, img[None], target)[0] for img in seen]
    kw: dict[str, Any] = {
        "steps": steps,
        "baseline": baseline,
        "batch_size": batch_size,
        "blur_sigma": blur_sigma,
        "patch": patch,
    }
    total = len(seen) * (len(resolved) + 1)
    done = 0
    rows: list[FaithfulnessRow] = []
    curves: dict[tuple[str, str], Curves] = {}
    maps_out: dict[tuple[str, str], Tensor] = {}
    for i, (label, img, tgt) in enumerate(zip(labels, seen, targets, strict=True)):
        tname = _target_name(model, tgt)
        for name, fn in resolved:
            m = attribution_maps(model, img[None], [tgt], fn, (options or {}).get(name))[0]
            c = deletion_insertion(model, img, tgt, m, **kw)
            curves[(label, name)] = c
            maps_out[(label, name)] = m
            rows.append(FaithfulnessRow(label, name, tname, c.deletion_auc, c.insertion_auc))
            done += 1
            on_progress(Progress("faithfulness", done, total, "curves", f"{label} {name}"))
        c = random_baseline(
            model, img, tgt, maps=random_maps, smooth=random_smooth, seed=seed + i, **kw
        )
        curves[(label, RANDOM)] = c
        rows.append(FaithfulnessRow(label, RANDOM, tname, c.deletion_auc, c.insertion_auc))
        done += 1
        on_progress(Progress("faithfulness", done, total, "curves", f"{label} random"))
    return FaithfulnessReport(tuple(rows), curves, steps, baseline, maps_out)


def report_table(report: FaithfulnessReport, *, mean: bool = False) -> list[list[str]]:
    """The report as rows of strings, a header first; `mean=True` adds one row per method
    averaged over the images ("mean")."""
    rows = [["image", "method", "target", "deletion AUC ↓", "insertion AUC ↑"]]
    for r in report.rows:
        rows.append(
            [r.image, r.method, r.target, f"{r.deletion_auc:.3f}", f"{r.insertion_auc:.3f}"]
        )
    images = {r.image for r in report.rows}
    if mean and len(images) > 1:
        for m, c in report.mean_curves().items():
            rows.append(["mean", m, "", f"{c.deletion_auc:.3f}", f"{c.insertion_auc:.3f}"])
    return rows
