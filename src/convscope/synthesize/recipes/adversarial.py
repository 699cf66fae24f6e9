"""Adversarial examples: projected gradient descent under an L∞ budget (Madry et al. 2018).

    result = adversarial(model, image, target="goldfish")      # targeted, eps 2/255
    result = adversarial(model, image, untargeted=True)        # away from the top class
    result.image, result.after[0], result.linf_levels, result.success

Each step moves every pixel by `step_size` along the sign of the gradient of the target's
probability (its log-probability has the same sign of gradient, so this is PGD on the
cross-entropy), then projects the image back into the ±eps box of the original and [0, 1]
(`callbacks.project_linf`). Untargeted, it steps down the original top class's probability.

The result is an 8-bit image, and the attack is checked on exactly that image:

- It runs at the size the model's own resize makes the image (its short side is the
  preprocessing's `resize`; no crop), rounded to 8-bit levels; the model sees its centre crop
  (a differentiable slice), normalized as usual. So the image, saved as a PNG and classified
  again with `model.classify(load_image(png))`, is resized by nothing, quantized to the same
  values and cropped to the same centre: it gets the prediction the attack checked. (A model
  without resize or crop attacks the image as given.)
- After each step the candidate is rounded to 8-bit levels and clipped, in whole levels, to
  the original's ±eps box, so the 8-bit image too is within eps; it is classified by the public
  path (`model.classify`), and the run stops as soon as its top-1 is the target (targeted) or
  is no longer the original class (untargeted).

`eps` is in [0, 1] units: 2/255 (the default) allows two 8-bit levels per pixel and channel.
The step size defaults to eps/4. The model is left exactly as it was; nothing is printed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor, nn

from convscope.errors import UserInputError
from convscope.events import ProgressCallback, no_progress
from convscope.models.base import ConvModel, Prediction, check_image_batch
from convscope.synthesize import callbacks as cb
from convscope.synthesize.objectives import class_prob
from convscope.synthesize.optimize import Run, StepState, seeded
from convscope.synthesize.params import ImageParam, PixelImage

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "DEFAULT_EPS",
    "AdversarialPlan",
    "AdversarialResult",
    "adversarial",
    "adversarial_panel",
    "attack_image",
    "plan_adversarial",
]

DEFAULT_EPS = 0.00784313725490196
"""2/255: two 8-bit levels (written out so that the CLI can read it from the source)."""
LEVELS = 255
"""8-bit levels above 0: a pixel value v in [0, 1] is stored as round(v · 255)."""
DIFFERENCE_GAIN = 10.0
"""How much `adversarial_panel` amplifies the difference image."""


def _levels_of(eps: float) -> int:
    """How many whole 8-bit levels fit in `eps` (a hair of tolerance for 2/255 · 255)."""
    return math.floor(eps * LEVELS + 1e-6)


def _check_eps(eps: float) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps):
        raise UserInputError(f"eps must be a finite number in (0, 1], got {eps!r}.")
    if not 0 < eps <= 1:
        raise UserInputError(f"eps must be in (0, 1] (2/255 is two 8-bit levels), got {eps}.")
    if _levels_of(eps) < 1:
        raise UserInputError(
            f"eps {eps:.6g} is less than one 8-bit level (1/255 = {1 / LEVELS:.6g}), so the "
            "saved image could not change; use at least 1/255."
        )
    return float(eps)


def _check_step_size(step_size: float | None, eps: float) -> float:
    if step_size is None:
        return eps / 4
    ok = isinstance(step_size, (int, float)) and not isinstance(step_size, bool)
    if not (ok and math.isfinite(step_size) and 0 < step_size <= 1):
        raise UserInputError(f"the step size must be a number in (0, 1], got {step_size!r}.")
    return float(step_size)


def _check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UserInputError(f"steps must be at least 1, got {steps!r}.")
    return steps


class _CentreCrop(nn.Module):
    """The model's centre crop as a differentiable slice (the same `center_crop` as
    `Preprocess.geometry`, so the same pixels)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = TF.center_crop(x, [self.size, self.size])
        return out

    def extra_repr(self) -> str:
        return f"size={self.size}"


def attack_image(model: ConvModel, image: Tensor) -> Tensor:
    """`image` (3, H, W) in [0, 1] as the attack sees it: resized as the model's
    preprocessing resizes it (no crop) and rounded to 8-bit levels; (3, h, w) on the CPU."""
    x = check_image_batch(image, "the image")
    if x.shape[0] != 1:
        raise UserInputError(f"attack one image at a time, not a batch of {x.shape[0]}.")
    if x.shape[-2] < 1 or x.shape[-1] < 1:
        raise UserInputError(f"the image is empty: {tuple(image.shape)}.")
    uncropped = replace(model.preprocess, crop=None)
    with torch.no_grad():
        sized = uncropped.geometry(x.detach().float().cpu()).clamp(0.0, 1.0)
    return (sized[0] * LEVELS).round() / LEVELS


def _on_grid(x: Tensor, base_levels: Tensor, m: int) -> Tensor:
    """`x` rounded to 8-bit levels, kept within `m` levels of `base_levels` and in 0..255."""
    k = (x.detach() * LEVELS).round()
    k = torch.minimum(torch.maximum(k, base_levels - m), base_levels + m).clamp(0, LEVELS)
    return k / LEVELS


@dataclass(frozen=True)
class AdversarialPlan:
    """What `plan_adversarial` worked out besides the run."""

    original: Tensor  # (3, H, W): the image at the attack size, on the 8-bit grid (CPU)
    before: list[Prediction]  # the model's top-5 for it
    target: int | None  # the class to reach (None: untargeted)
    source: int  # the original top-1 class
    eps: float
    eps_levels: int  # whole 8-bit levels within eps
    step_size: float
    untargeted: bool
    min_probability: float = 0.0  # a targeted attack's success also needs this probability


@dataclass(frozen=True)
class AdversarialResult:
    image: Tensor  # (3, H, W) the adversarial image on the 8-bit grid, at the attack size (CPU)
    original: Tensor  # (3, H, W) the original at that size, on the 8-bit grid
    before: list[Prediction]  # top-5 of the original
    after: list[Prediction]  # top-5 of `image`
    target: int | None  # the class aimed at (None: untargeted)
    source: int  # the original top-1 class
    eps: float
    step_size: float
    steps: int  # steps used (0 when the original already is the target)
    max_steps: int
    success: bool  # the top-1 of `image` is the target (untargeted: is not `source`)
    linf: float  # max |image − original| in [0, 1] units
    l2: float  # ||image − original||₂ over all pixels and channels, in [0, 1] units
    history: list[float] = field(default_factory=list)  # −p(target) (untargeted: p(source))

    @property
    def linf_levels(self) -> int:
        """The L∞ distance in 8-bit levels."""
        return round(self.linf * LEVELS)

    @property
    def l2_levels(self) -> float:
        """The L2 distance in 8-bit levels."""
        return self.l2 * LEVELS


def plan_adversarial(
    model: ConvModel,
    image: Tensor,
    *,
    target: str | int | None = None,
    eps: float = DEFAULT_EPS,
    steps: int = 100,
    step_size: float | None = None,
    untargeted: bool = False,
    random_start: bool = False,
    min_probability: float = 0.0,
    seed: int = 0,
) -> tuple[Run, AdversarialPlan]:
    """The run `adversarial` would start (for `--dry-run`), and what it is aiming at."""
    eps = _check_eps(eps)
    steps = _check_steps(steps)
    step = _check_step_size(step_size, eps)
    if not (isinstance(min_probability, (int, float)) and 0.0 <= min_probability < 1.0):
        raise UserInputError(f"the minimum probability must be in [0, 1), got {min_probability!r}.")
    if untargeted and min_probability > 0:
        raise UserInputError("a minimum probability is for a target; leave it out with untargeted.")
    if model.classes is None:
        raise UserInputError(
            f"model {model.name!r} has no classes, so there is no prediction to change; "
            "attack a classifier."
        )
    if untargeted and target is not None:
        raise UserInputError(
            "an untargeted attack pushes the image away from its own top class; leave the "
            "target out, or drop untargeted to aim at the target."
        )
    if not untargeted and target is None:
        raise UserInputError("name the class to aim at (a target), or make the attack untargeted.")
    index = None
    if target is not None:
        from convscope.attribute.targets import class_target

        index = class_target(model, target)[0].index
    original = attack_image(model, image)
    before = model.classify(original, top=5)[0]
    source = before[0].index
    m = _levels_of(eps)
    device = model.device
    with seeded(seed):
        start = original[None]
        if random_start:  # Madry et al.: a uniform start in the eps box
            noise = (torch.rand_like(start) * 2 - 1) * eps
            start = (start + noise).clamp(0.0, 1.0)
        pixels = PixelImage((int(start.shape[-2]), int(start.shape[-1])), init=start)
    param = ImageParam(pixels, decorrelate=False, activation="none").to(device)
    crop = model.preprocess.crop
    objective = class_prob(source) * -1.0 if index is None else class_prob(index)
    run = Run(
        model,
        objective,
        param,
        transforms=None if crop is None else _CentreCrop(crop),
        steps=steps,
        optimizer="sign",
        lr=step,
        callbacks=[cb.project_linf(original[None], eps)],
    )
    plan = AdversarialPlan(
        original, before, index, source, eps, m, step, untargeted, float(min_probability)
    )
    return run, plan


class _Check:
    """After each step: the candidate on the 8-bit grid, classified by the public path; stops
    the run when it succeeds."""

    def __init__(self, model: ConvModel, plan: AdversarialPlan) -> None:
        self.model, self.plan = model, plan
        self.base = (plan.original * LEVELS).round()
        self.image = plan.original
        self.top = plan.before

    def success(self, top: list[Prediction]) -> bool:
        if self.plan.target is None:
            return top[0].index != self.plan.source
        return top[0].index == self.plan.target and top[0].prob >= self.plan.min_probability

    def __call__(self, state: StepState) -> bool | None:
        with torch.no_grad():
            x = state.param().detach().float().cpu()[0]
        self.image = _on_grid(x, self.base, self.plan.eps_levels)
        self.top = self.model.classify(self.image, top=5)[0]
        return False if self.success(self.top) else None


def adversarial(
    model: ConvModel,
    image: Tensor,
    *,
    target: str | int | None = None,
    eps: float = DEFAULT_EPS,
    steps: int = 100,
    step_size: float | None = None,
    untargeted: bool = False,
    random_start: bool = False,
    min_probability: float = 0.0,
    seed: int = 0,
    preview_every: int | None = None,
    on_progress: ProgressCallback = no_progress,
) -> AdversarialResult:
    """An adversarial example for `image` (3, H, W) in [0, 1] (see the module docstring).

    Args:
        target: the class to reach (a name, matched as elsewhere, or an index); with
            `untargeted`, leave it out: the attack then only moves the top-1 off the original
            class.
        eps: the L∞ budget in [0, 1] units (2/255: two 8-bit levels), at least 1/255.
        steps: the most steps; the attack stops at the first that succeeds.
        step_size: per step and pixel, in [0, 1] units (default eps/4).
        random_start: start from a uniform random point of the eps box (Madry et al.),
            drawn with `seed`; otherwise from the image itself.
        min_probability: a targeted attack goes on until the target is the top-1 with at
            least this probability (0: as soon as it is the top-1), within `steps`.
        preview_every: attach the current image to every N-th step's progress event.
    """
    run, plan = plan_adversarial(
        model,
        image,
        target=target,
        eps=eps,
        steps=steps,
        step_size=step_size,
        untargeted=untargeted,
        random_start=random_start,
        min_probability=min_probability,
        seed=seed,
    )
    check = _Check(model, plan)
    used, history = 0, []
    if not check.success(plan.before):  # a target the model already predicts needs no step
        run.callbacks = [*run.callbacks, check]
        recipe = repr(
            {
                "recipe": "adversarial",
                "size": tuple(plan.original.shape[-2:]),
                "target": plan.target,
                "source": plan.source,
                "eps": plan.eps,
                "seed": seed,
                "random_start": random_start,
                "min_probability": plan.min_probability,
            }
        )
        with seeded(seed + 1):
            result = run.start(
                task="adversarial",
                recipe=recipe,
                preview_every=preview_every,
                on_progress=on_progress,
            )
        used, history = result.steps, result.history
    # Distances from the whole levels, so that 2 levels read as exactly 2/255.
    diff = ((check.image.double() * LEVELS).round() - check.base.double()) / LEVELS
    return AdversarialResult(
        image=check.image,
        original=plan.original,
        before=plan.before,
        after=check.top,
        target=plan.target,
        source=plan.source,
        eps=plan.eps,
        step_size=plan.step_size,
        steps=used,
        max_steps=run.steps,
        success=check.success(check.top),
        linf=float(diff.abs().max()) if diff.numel() else 0.0,
        l2=float(diff.norm()),
        history=history,
    )


def adversarial_panel(result: AdversarialResult, *, gain: float = DIFFERENCE_GAIN) -> Image.Image:
    """The lecture's picture: the original, the adversarial image and their difference
    amplified `gain` times (centred on gray), each labelled with its top-1 and probability."""
    from convscope.data.images import to_pil
    from convscope.render.grids import titled
    from convscope.render.panels import side_by_side

    if not (math.isfinite(gain) and gain > 0):
        raise UserInputError(f"the gain must be a positive number, got {gain}.")
    diff = ((result.image - result.original) * gain + 0.5).clamp(0.0, 1.0)
    top0, top1 = result.before[0], result.after[0]
    columns = [
        (result.original, f"original: {_short(top0.name)} {top0.prob:.1%}"),
        (result.image, f"adversarial: {_short(top1.name)} {top1.prob:.1%}"),
        (diff, f"difference x{gain:g} (on gray)"),
    ]
    height = max(22, min(36, int(result.image.shape[-1]) // 16 + 10))
    row = side_by_side([titled(to_pil(x), text, height=height) for x, text in columns], gap=8)
    steps = f"{result.steps} step{'s' if result.steps != 1 else ''}"
    title = (
        f"L-inf {result.linf_levels}/255, L2 {result.l2:.3f} ({result.l2_levels:.0f} levels), "
        f"{steps}{'' if result.success else ', target not reached'}"
    )
    return titled(row, title, height=height + 6)


def _short(name: str) -> str:
    """A class name's first synonym ("tiger cat" of "tiger cat, Felis …")."""
    return name.split(",")[0].strip()
