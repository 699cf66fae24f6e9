"""Occlusion sensitivity (Zeiler & Fergus 2014): slide a window×window patch over the image and
record how much the target's score drops while the patch hides each region.

    maps = occlusion_map(model, images, targets, window=16, stride=8)   # (B, H, W)

The value at a pixel is the drop `p_original − p_occluded` of the target's score (the softmax
probability of a `ClassTarget`; the activation of a `NeuronTarget`, whose missing position is
fixed at the clean image's strongest location), averaged over every window position covering
the pixel, then clipped at 0 (the attribution contract's maps are non-negative: a patch that
*raises* the score counts as unimportant). Window positions are 0, stride, 2·stride, … plus one
flush with the far edge, so the border is covered; pixels no window covers (stride > window)
get 0.

How it is fast, in "exact" mode:
- Batching: many masked images per forward pass, on a private channels-last copy of the
  network (the caller's model is never touched and no hook is registered).
- Skipping work (class targets of models that `torch.fx` can trace into leaf-module calls):
  the clean image runs once and every early layer's output is cached. A patch changes a layer
  only inside its region of influence (receptive-field arithmetic on the traced geometry,
  TF-SAME asymmetric padding and strides included), so each masked image recomputes just that
  crop of each early layer — convolutions and pools on crops read their halo from the cached
  clean map, pointwise ops (BN, activations, residual adds, 1×1 convs) run on the crops — and
  the crops are pasted into the cached maps at the first layer whose crop would exceed
  `SWITCH_FRACTION` of its map (or that is not known to be local, like a global pool or a
  squeeze-excite gate); the rest of the network runs whole, batched. Before use, the plan's
  pasted maps are compared with whole forwards on the four corner windows and the centre; a
  mismatch, an untraceable model, or a neuron target falls back to whole forwards.
- Convolutions that pad in their own forward (TF-SAME at stride 1) run as one convolution with
  that padding (checked on the clean image), which saves copying each padded input.
- Each eval-mode BatchNorm that only follows a plain convolution is folded into it (on the
  private copy): the same affine map, one pass fewer over every activation. This is exact up to
  float rounding; the copy is used only if it scores the clean images as the model does (class
  probabilities within 1e-6, a neuron target's layer within 1e-5 of its scale), so a neuron
  target at a convolution whose BatchNorm was folded away runs unfolded.

Modes:
- "exact": float32. The map equals the straightforward loop (`_occlusion_loop`: one float32
  forward per window position, batch 1, with the model as loaded) within 1e-5 (max abs
  difference); for EfficientNet-Lite0 at 224 px, window 16, stride 8 it is about 4e-7.
- "fast": also runs in reduced precision where the hardware has it natively: bfloat16 autocast
  on CPUs with AVX-512 BF16 / AMX, bfloat16 (or float16) on CUDA. With the plan, only the
  whole maps after the pasted crops run in it, where nearly all of the work is (EfficientNet-
  Lite0 at 224 px, window 16, stride 8: 220M of the 245M multiply-adds per mask); the crops
  stay float32 (in bfloat16 they caused about half of the error) and so does the pooled
  classifier after the last spatial layer (in bfloat16 the 1280-input fc of EfficientNet-Lite0
  alone cost up to 0.013 in probability). Whole forwards (untraceable models, neuron targets)
  run all in reduced precision. On CPUs without native bfloat16 (oneDNN's reference bf16
  kernels are ~10× slower than float32) "fast" runs float32 and equals "exact".
  Tolerance (class targets): max abs difference from the exact map ≤ `FAST_TOLERANCE` = 0.3
  (probability). Measured with bfloat16 on EfficientNet-Lite0 (torch 2.14, one image per
  call), on a CPU with avx512_bf16 (no AMX) and again with oneDNN capped at AVX2
  (`ONEDNN_MAX_CPU_ISA=AVX2`: emulated bf16): on random 64 px images (seeds 0–9, window 16,
  stride 16; the efficientnet tests' setting) up to 0.12 with the plan and 0.22 with whole
  forwards — images this much smaller than the model's 224 px are where bfloat16 errs most,
  and the two CPUs' results for one image differed by up to 0.03, hence the margin. At 224 px,
  on the six bundled photos (window 16, stride 8 and stride 16) and four random images (stride
  16), the worst was 0.007 with the plan and 0.018 with whole forwards (photos, stride 16).
  Other models differ.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from convscope.attribute.gradients import check_attribution_inputs
from convscope.attribute.occlusion_plan import IncrementalRunner, Plan, Runner
from convscope.attribute.targets import ClassTarget, NeuronTarget, Target, target_scores
from convscope.device import fast_dtype
from convscope.errors import UserInputError
from convscope.events import Progress, ProgressCallback, no_progress
from convscope.models.base import ConvModel
from convscope.models.fuse import fold_batchnorms
from convscope.models.graph import Traced, close
from convscope.probe import capture

__all__ = [
    "BATCH_SIZE",
    "FAST_TOLERANCE",
    "FILLS",
    "MODES",
    "SWITCH_FRACTION",
    "WHOLE_BATCH_SIZE",
    "occlusion_map",
]

Fill = Literal["gray", "mean", "blur"]
Mode = Literal["exact", "fast"]
FILLS: tuple[str, ...] = ("gray", "mean", "blur")
MODES: tuple[str, ...] = ("exact", "fast")

BATCH_SIZE = 32
"""Masked images per forward pass by default when exact mode skips the early layers' work
(their crops are small, so larger batches pay; measured on a 2-core CPU, 16 and 64 were slower).
"""

WHOLE_BATCH_SIZE = 4
"""Masked images per forward pass by default when whole images run (as for the plain forward of
EfficientNet-Lite0 at 224 px on a 2-core CPU, 4 beat 1, 8 and 16)."""

FAST_TOLERANCE = 0.3
"""Max abs difference (in probability, class targets) between a "fast" map and the exact one:
the worst measured on EfficientNet-Lite0 in bfloat16, 0.22 (whole forwards, random 64 px
images, window 16, stride 16), plus a margin for other CPUs' kernels (0.03 apart on one image
between native and emulated bf16); at 224 px it was at most 0.018 (0.007 with the plan).
Measurements in the module docstring."""

SWITCH_FRACTION = 0.75
"""Exact mode recomputes crops of a layer while the crop covers at most this fraction of the
layer's map; from the first layer beyond it, masked images run the rest of the network whole."""

_FOLD_TOLERANCE = 1e-6
"""Max abs difference in class probability, on the clean images, between the model and its copy
with BatchNorms folded into convolutions; beyond it occlusion runs the unfolded copy."""


# ---- public API ------------------------------------------------------------------------------
def occlusion_map(
    model: ConvModel,
    images: Tensor,
    targets: Sequence[Target],
    *,
    window: int = 16,
    stride: int = 8,
    fill: Fill = "gray",
    batch_size: int | None = None,
    mode: Mode = "exact",
    on_progress: ProgressCallback = no_progress,
) -> Tensor:
    """Occlusion maps (B, H, W), float32 on the CPU, non-negative, for `images` (B, 3, H, W)
    in [0, 1] as the model sees them and one target per image.

    Args:
        window: side of the square patch, in pixels (1 ≤ window ≤ min(H, W)).
        stride: step between window positions (≥ 1).
        fill: what the patch shows: "gray" (0.5), "mean" (the image's per-channel mean) or
            "blur" (a Gaussian-blurred copy of the image, σ = window / 4).
        batch_size: masked images per forward pass; None = `BATCH_SIZE` (32) when the early
            layers' work is skipped, `WHOLE_BATCH_SIZE` (4) when whole images run.
        mode: "exact" (float32; equal to the straightforward loop within 1e-5) or "fast"
            (bfloat16 where native, float32 = exact elsewhere; within `FAST_TOLERANCE` = 0.3
            of exact, the worst measured on EfficientNet-Lite0, at 64 px; at its 224 px at
            most 0.018).
        on_progress: gets `Progress("occlusion", done, total, unit="masks")` at the start and
            after every batch.

    See the module docstring for what the value means and how the work is skipped.
    """
    return _occlusion(
        model,
        images,
        targets,
        window=window,
        stride=stride,
        fill=fill,
        batch_size=batch_size,
        mode=mode,
        on_progress=on_progress,
    ).clamp(min=0)


# ---- shared pieces ---------------------------------------------------------------------------
def _check(
    model: ConvModel,
    images: Tensor,
    targets: Sequence[Target],
    window: int,
    stride: int,
    fill: str,
    batch_size: int | None = None,
    mode: str = "exact",
) -> Tensor:
    """Validate everything before any work; return a private (B, 3, H, W) copy of `images`."""
    if fill not in FILLS:
        raise UserInputError(f"Unknown fill {fill!r}; choose gray, mean or blur.")
    if mode not in MODES:
        raise UserInputError(f"Unknown occlusion mode {mode!r}; choose exact or fast.")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise UserInputError(f"window must be at least 1, got {window!r}.")
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise UserInputError(f"stride must be at least 1, got {stride!r}.")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise UserInputError(f"batch_size must be at least 1, got {batch_size!r}.")
    x = check_attribution_inputs(model, images, targets)
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if window > min(h, w):
        raise UserInputError(f"window {window} is larger than the {h}×{w} image.")
    for t in targets:
        if not isinstance(t, (ClassTarget, NeuronTarget)):
            raise UserInputError(f"targets must be ClassTarget or NeuronTarget, not {t!r}.")
    return x


def _starts(size: int, window: int, stride: int) -> list[int]:
    """Window offsets along one axis: 0, stride, … and a last one flush with the far edge."""
    last = size - window
    starts = list(range(0, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    return starts


def _positions(h: int, w: int, window: int, stride: int) -> list[tuple[int, int]]:
    return [(y, x) for y in _starts(h, window, stride) for x in _starts(w, window, stride)]


def _fill_image(image: Tensor, fill: str, window: int) -> Tensor:
    """(1, 3, H, W) image in [0, 1] → what a patch shows, as a full image of the same size."""
    if fill == "gray":
        return torch.full_like(image, 0.5)
    if fill == "mean":
        return image.mean(dim=(-2, -1), keepdim=True).expand_as(image).clone()
    sigma = window / 4
    h, w = int(image.shape[-2]), int(image.shape[-1])
    radius = min(math.ceil(3 * sigma), h - 1, w - 1)  # reflect padding needs radius < size
    if radius < 1:
        return image.clone()
    k = 2 * radius + 1
    blurred: Tensor = TF.gaussian_blur(image, [k, k], [sigma, sigma])
    return blurred


def _fixed_target(model: ConvModel, clean: Tensor, target: Target) -> Target:
    """A neuron target without a position gets the clean image's strongest location, so every
    masked image is scored at the same neuron."""
    if not isinstance(target, NeuronTarget) or target.position is not None:
        return target
    act = capture(model, clean, [target.layer])[target.layer]
    if act.dim() != 4:
        raise UserInputError(
            f"layer {target.layer} has output shape {tuple(act.shape)}; not spatial."
        )
    c, w = int(act.shape[1]), int(act.shape[-1])
    if not 0 <= target.channel < c:
        raise UserInputError(
            f"channel {target.channel} is out of range 0..{c - 1} for layer {target.layer}."
        )
    y, x = divmod(int(act[0, target.channel].flatten().argmax()), w)
    return NeuronTarget(target.layer, target.channel, (y, x))


def _average(
    drops: Sequence[float], positions: Sequence[tuple[int, int]], h: int, w: int, window: int
) -> Tensor:
    """Per-pixel mean of the drops of every window covering it (0 where none does)."""
    total = torch.zeros(h, w, dtype=torch.float64)
    count = torch.zeros(h, w, dtype=torch.float64)
    for d, (y, x) in zip(drops, positions, strict=True):
        total[y : y + window, x : x + window] += d
        count[y : y + window, x : x + window] += 1
    return (total / count.clamp(min=1)).float()


def _occlusion_loop(
    model: ConvModel,
    images: Tensor,
    targets: Sequence[Target],
    *,
    window: int = 16,
    stride: int = 8,
    fill: Fill = "gray",
) -> Tensor:
    """The straightforward reference: one float32 forward per window position, batch 1, with
    the model as loaded. Returns the signed (unclipped) maps (B, H, W)."""
    x = _check(model, images, targets, window, stride, fill)
    h, w = int(x.shape[-2]), int(x.shape[-1])
    positions = _positions(h, w, window, stride)
    norm = model.preprocess.normalize
    maps = []
    with torch.inference_mode():
        for b in range(x.shape[0]):
            image = x[b : b + 1]
            filled = _fill_image(image, fill, window)
            t = [_fixed_target(model, norm(image), targets[b])]
            p0 = float(target_scores(model, norm(image), t, prob=True)[0])
            drops = []
            for y, xx in positions:
                masked = image.clone()
                masked[..., y : y + window, xx : xx + window] = filled[
                    ..., y : y + window, xx : xx + window
                ]
                drops.append(p0 - float(target_scores(model, norm(masked), t, prob=True)[0]))
            maps.append(_average(drops, positions, h, w, window))
    return torch.stack(maps)


# ---- the engine ------------------------------------------------------------------------------
def _occlusion(
    model: ConvModel,
    images: Tensor,
    targets: Sequence[Target],
    *,
    window: int = 16,
    stride: int = 8,
    fill: Fill = "gray",
    batch_size: int | None = None,
    mode: Mode = "exact",
    on_progress: ProgressCallback = no_progress,
    switch_fraction: float = SWITCH_FRACTION,
    incremental: bool = True,
    channels_last: bool = True,
    fast_dtype: torch.dtype | Literal["auto"] | None = "auto",
) -> Tensor:
    """Signed occlusion maps (B, H, W); `occlusion_map` clips them. The private switches
    (`switch_fraction`, `incremental`, `channels_last`, `fast_dtype`: the reduced precision of
    fast mode, "auto" = `_fast_dtype(device)`) exist for tests and benchmarks."""
    x = _check(model, images, targets, window, stride, fill, batch_size, mode)
    n_img, _, h, w = (int(d) for d in x.shape)
    positions = _positions(h, w, window, stride)
    total = n_img * len(positions)
    on_progress(Progress("occlusion", 0, total, unit="masks"))
    fast = mode == "fast"
    work = _working_copy(model, channels_last=channels_last, fold=True)
    if work is not model and not _fold_keeps_scores(model, work, x, targets):
        work = _working_copy(model, channels_last=channels_last, fold=False)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    precision = _precision(work.device, fast_dtype) if fast else contextlib.nullcontext
    traced = None
    if incremental and any(isinstance(t, ClassTarget) for t in targets):
        traced = Traced.trace(work.module)
    plan: Plan | None = None
    maps = []
    done = 0
    with torch.inference_mode():
        for b in range(n_img):
            image = x[b : b + 1]
            clean = work.preprocess.normalize(image).contiguous(memory_format=fmt)
            patch = work.preprocess.normalize(_fill_image(image, fill, window))
            patch = patch.contiguous(memory_format=fmt)
            target = _fixed_target(work, clean, targets[b])
            runner: Runner
            if traced is not None and plan is None and not traced.faithful(clean, work.module):
                traced = None
            if traced is not None and isinstance(target, ClassTarget):
                if plan is None:
                    grid = (len(_starts(h, window, stride)), len(_starts(w, window, stride)))
                    plan = Plan.build(traced, clean, positions, grid, window, switch_fraction, fmt)
                runner = IncrementalRunner(plan, work, clean, patch, target, precision)
                skips = len(plan.steps) > 1
            else:
                runner = _FullRunner(work, clean, patch, target, window, positions, precision, fmt)
                skips = False
            per_pass = batch_size or (BATCH_SIZE if skips else WHOLE_BATCH_SIZE)
            drops: list[float] = []
            for idx in _iter_batches(len(positions), per_pass):
                drops.extend(runner.drops(idx))
                done += len(idx)
                on_progress(Progress("occlusion", done, total, unit="masks"))
            maps.append(_average(drops, positions, h, w, window))
    return torch.stack(maps).cpu()


def _fast_dtype(device: torch.device) -> torch.dtype | None:
    """The reduced precision that is actually faster on `device`, if any (see
    `convscope.device.fast_dtype`)."""
    return fast_dtype(device)


def _precision(
    device: torch.device, dtype: torch.dtype | Literal["auto"] | None = "auto"
) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    if dtype == "auto":
        dtype = _fast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def _working_copy(model: ConvModel, *, channels_last: bool, fold: bool = False) -> ConvModel:
    """A private copy of the model to run: channels-last where asked, with batch norms folded
    into the convolutions before them when `fold`. The model itself when it cannot be
    copied."""
    if not (channels_last or fold):
        return model
    try:
        module = copy.deepcopy(model.module)
    except Exception:  # e.g. a module holding something that cannot be copied
        return model
    if fold:
        fold_batchnorms(module)
    if channels_last:
        module.to(memory_format=torch.channels_last)
    return model.with_module(module)


def _fold_keeps_scores(
    model: ConvModel, work: ConvModel, images: Tensor, targets: Sequence[Target]
) -> bool:
    """Whether the folded copy scores the clean images as the model does: class probabilities
    within `_FOLD_TOLERANCE`, a neuron target's whole layer within `PLAN_TOLERANCE` of its
    largest value (a target at a convolution whose BatchNorm was folded into it fails this, and
    occlusion then runs unfolded)."""
    with torch.inference_mode():
        for b, target in enumerate(targets):
            x = model.preprocess.normalize(images[b : b + 1])
            if isinstance(target, NeuronTarget):
                want = capture(model, x, [target.layer])[target.layer]
                got = capture(work, x, [target.layer])[target.layer]
                if not close(got, want):
                    return False
                continue
            want, got = model(x), work(x)
            if want.dim() != 2 or got.shape != want.shape:
                return False
            diff = (got.softmax(dim=1) - want.softmax(dim=1)).abs().max()
            if float(diff) > _FOLD_TOLERANCE:
                return False
    return True


class _FullRunner(Runner):
    """Masked images go through the whole (copied) model, `len(idx)` per forward."""

    def __init__(
        self,
        work: ConvModel,
        clean: Tensor,
        patch: Tensor,
        target: Target,
        window: int,
        positions: Sequence[tuple[int, int]],
        precision: Callable[[], contextlib.AbstractContextManager[Any]],
        fmt: torch.memory_format,
    ) -> None:
        self.work, self.clean, self.patch, self.target = work, clean, patch, target
        self.fmt = fmt
        self.window, self.positions, self.precision = window, positions, precision
        with self.precision():
            self.p0 = float(target_scores(work, clean, [target], prob=True).float()[0])

    def drops(self, idx: list[int]) -> list[float]:
        w = self.window
        batch = torch.empty(
            (len(idx), *self.clean.shape[1:]), dtype=self.clean.dtype, device=self.clean.device
        ).contiguous(memory_format=self.fmt)
        batch.copy_(self.clean.expand(len(idx), -1, -1, -1))
        for b, m in enumerate(idx):
            y, x = self.positions[m]
            batch[b, :, y : y + w, x : x + w] = self.patch[0, :, y : y + w, x : x + w]
        with self.precision():
            p = target_scores(self.work, batch, [self.target] * len(idx), prob=True)
        return [self.p0 - v for v in p.float().tolist()]


def _iter_batches(n: int, size: int) -> Iterator[list[int]]:
    for start in range(0, n, size):
        yield list(range(start, min(start + size, n)))
