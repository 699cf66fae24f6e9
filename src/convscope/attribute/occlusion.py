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
  on CPUs with AVX-512 BF16 / AMX, bfloat16 (or float16) on CUDA — except the pooled
  classifier after the last spatial layer, which stays float32 (in bfloat16 the 1280-input fc
  of EfficientNet-Lite0 alone cost up to 0.013 in probability). On CPUs without native
  bfloat16 (oneDNN's reference bf16 kernels are ~10× slower than float32) it stays float32.
  Tolerance: max abs difference from the exact map ≤ `FAST_TOLERANCE` = 0.02 (probability).
  Measured with bfloat16 on EfficientNet-Lite0 at 224 px: per-window drops within 0.012 of
  float32 on the six bundled photos (every 23rd window of 729); about 1e-6 in float32.
"""

from __future__ import annotations

import contextlib
import copy
import math
import operator
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import Tensor, fx, nn

from convscope.attribute.gradients import check_attribution_inputs
from convscope.attribute.targets import ClassTarget, NeuronTarget, Target, target_scores
from convscope.errors import UserInputError
from convscope.events import Progress, ProgressCallback, no_progress
from convscope.models.base import ConvModel
from convscope.probe import capture
from convscope.receptive import RFTracker

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

FAST_TOLERANCE = 0.02
"""Max abs difference (in probability) between a "fast" map and the exact one."""

SWITCH_FRACTION = 0.75
"""Exact mode recomputes crops of a layer while the crop covers at most this fraction of the
layer's map; from the first layer beyond it, masked images run the rest of the network whole."""

_FOLD_TOLERANCE = 1e-6
"""Max abs difference in class probability, on the clean images, between the model and its copy
with BatchNorms folded into convolutions; beyond it occlusion runs the unfolded copy."""

_PLAN_TOLERANCE = 1e-5  # incremental vs full activations, relative to their largest value


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
            (bfloat16 where native; within `FAST_TOLERANCE` = 0.02 of exact).
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
        traced = _Traced.trace(work.module)
    plan: _Plan | None = None
    maps = []
    done = 0
    with torch.inference_mode():
        for b in range(n_img):
            image = x[b : b + 1]
            clean = work.preprocess.normalize(image).contiguous(memory_format=fmt)
            patch = work.preprocess.normalize(_fill_image(image, fill, window))
            patch = patch.contiguous(memory_format=fmt)
            target = _fixed_target(work, clean, targets[b])
            runner: _Runner
            if traced is not None and plan is None and not traced.faithful(clean, work.module):
                traced = None
            if traced is not None and isinstance(target, ClassTarget):
                if plan is None:
                    grid = (len(_starts(h, window, stride)), len(_starts(w, window, stride)))
                    plan = _Plan.build(traced, clean, positions, grid, window, switch_fraction, fmt)
                runner = _IncrementalRunner(plan, work, clean, patch, target, precision)
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
    """The reduced precision that is actually faster on `device`, if any: bfloat16 on CPUs
    with native bf16 (AVX-512 BF16 / AMX; elsewhere oneDNN falls back to slow reference
    kernels), bfloat16 or float16 on CUDA."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        try:
            native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            native = False
        return torch.bfloat16 if native else None
    return None


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
        _fold_batchnorms(module)
    if channels_last:
        module.to(memory_format=torch.channels_last)
    return model.with_module(module)


def _fold_keeps_scores(
    model: ConvModel, work: ConvModel, images: Tensor, targets: Sequence[Target]
) -> bool:
    """Whether the folded copy scores the clean images as the model does: class probabilities
    within `_FOLD_TOLERANCE`, a neuron target's whole layer within `_PLAN_TOLERANCE` of its
    largest value (a target at a convolution whose BatchNorm was folded into it fails this, and
    occlusion then runs unfolded)."""
    with torch.inference_mode():
        for b, target in enumerate(targets):
            x = model.preprocess.normalize(images[b : b + 1])
            if isinstance(target, NeuronTarget):
                want = capture(model, x, [target.layer])[target.layer]
                got = capture(work, x, [target.layer])[target.layer]
                if not _close(got, want):
                    return False
                continue
            want, got = model(x), work(x)
            if want.dim() != 2 or got.shape != want.shape:
                return False
            diff = (got.softmax(dim=1) - want.softmax(dim=1)).abs().max()
            if float(diff) > _FOLD_TOLERANCE:
                return False
    return True


def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> bool:
    """Fold `bn` into `conv`'s weight and bias, if the folded conv reproduces bn(conv(z)) on a
    random probe (a conv subclass whose forward does not use them as a conv is left alone)."""
    assert bn.running_mean is not None and bn.running_var is not None
    k = max(int(d) for d in conv.weight.shape[-2:])
    z = torch.randn(
        1, conv.in_channels, 2 * k + 3, 2 * k + 3, generator=torch.Generator().manual_seed(0)
    ).to(conv.weight)
    with torch.no_grad():
        try:
            want = bn(conv(z))
        except Exception:
            return False
        old_weight, old_bias = conv.weight.detach().clone(), conv.bias
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale
        if bn.bias is not None:
            shift = shift + bn.bias
        bias = shift if conv.bias is None else conv.bias * scale + shift
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        conv.bias = nn.Parameter(bias.detach().clone())
        got = conv(z)
        tol = 1e-4 * float(want.abs().max()) + 1e-5
        if got.shape == want.shape and float((got - want).abs().max()) <= tol:
            return True
        conv.weight.copy_(old_weight)
        conv.bias = old_bias
    return False


def _fold_batchnorms(module: nn.Module) -> int:
    """Fold every eval-mode BatchNorm2d that only follows a plain convolution into it (in
    place, on a private copy): the BN becomes an identity. Returns how many were folded."""
    traced = _Traced.trace(module)
    if traced is None:
        return 0
    folded = 0
    for node in traced.nodes:
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        bn = traced.modules[str(node.target)]
        src = node.args[0]
        if not (
            type(bn) is nn.BatchNorm2d
            and not bn.training
            and bn.running_mean is not None
            and bn.running_var is not None
            and isinstance(src, fx.Node)
            and src.op == "call_module"
            and len(src.users) == 1
        ):
            continue
        conv = traced.modules[str(src.target)]
        if not isinstance(conv, nn.Conv2d) or not _fold_into(conv, bn):
            continue
        parent_name, _, name = str(node.target).rpartition(".")
        parent = traced.modules[parent_name] if parent_name else module
        setattr(parent, name, nn.Identity())
        folded += 1
    return folded


class _Runner:
    def drops(self, idx: list[int]) -> list[float]:
        raise NotImplementedError


class _FullRunner(_Runner):
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


# ---- tracing ---------------------------------------------------------------------------------
class _LeafTracer(fx.Tracer):
    """Every module without children (and every torch.nn module) stays one call."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return next(iter(m.children()), None) is None or super().is_leaf_module(
            m, module_qualified_name
        )


def _close(got: Tensor, want: Tensor) -> bool:
    """Equal up to float rounding: same shape, max abs difference ≤ `_PLAN_TOLERANCE` × the
    largest magnitude (a wrong computation is off by the size of the values themselves)."""
    if got.shape != want.shape:
        return False
    if got.numel() == 0:
        return True
    scale = float(want.abs().max())
    return float((got - want).abs().max()) <= _PLAN_TOLERANCE * scale


def _fetch(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass
class _Traced:
    """A model's forward as an fx graph of leaf-module calls and tensor functions."""

    root: nn.Module
    nodes: list[fx.Node]
    modules: dict[str, nn.Module]

    @staticmethod
    def trace(module: nn.Module) -> _Traced | None:
        try:
            graph = _LeafTracer().trace(module)
        except Exception:  # data-dependent control flow, shape arithmetic, …: not traceable
            return None
        nodes = list(graph.nodes)
        if sum(n.op == "placeholder" for n in nodes) != 1 or nodes[0].op != "placeholder":
            return None
        return _Traced(module, nodes, dict(module.named_modules()))

    def faithful(self, x: Tensor, module: nn.Module) -> bool:
        """Does the graph compute what the module computes on `x`?"""
        env: dict[fx.Node, Any] = {self.nodes[0]: x}
        try:
            for node in self.nodes[1:]:
                env[node] = self.run(node, env)
            want = module(x)
        except Exception:
            return False
        got = env[self.nodes[-1]]
        return isinstance(got, Tensor) and isinstance(want, Tensor) and _close(got, want)

    def run(self, node: fx.Node, env: dict[fx.Node, Any]) -> Any:
        """Execute one node with its inputs taken from `env`."""

        def look(n: fx.Node) -> Any:
            return env[n]

        args = fx.node.map_arg(node.args, look)
        kwargs = fx.node.map_arg(node.kwargs, look)
        if node.op == "call_module":
            return self.modules[str(node.target)](*args, **kwargs)
        if node.op == "call_function":
            fn: Any = node.target
            return fn(*args, **kwargs)
        if node.op == "call_method":
            obj, *rest = args
            return getattr(obj, str(node.target))(*rest, **kwargs)
        if node.op == "get_attr":
            return _fetch(self.root, str(node.target))
        if node.op == "output":
            return args[0]
        raise RuntimeError(f"cannot run fx node {node.op}")


# Ops that act on each pixel on its own (spatially): they commute with cropping.
_POINTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm2d,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
)
_POINTWISE_FUNCTIONS: frozenset[Any] = frozenset(
    {
        torch.relu,
        torch.sigmoid,
        torch.tanh,
        torch.clamp,
        F.relu,
        F.relu6,
        F.hardtanh,
        F.silu,
        F.gelu,
        F.leaky_relu,
        F.hardswish,
        F.hardsigmoid,
        F.elu,
        F.mish,
        operator.neg,
        operator.add,
        operator.sub,
        operator.mul,
        operator.truediv,
        operator.iadd,
        operator.imul,
        torch.add,
        torch.sub,
        torch.mul,
        torch.cat,
    }
)
_POINTWISE_METHODS: frozenset[str] = frozenset(
    {"relu", "sigmoid", "tanh", "clamp", "contiguous", "add", "sub", "mul", "div"}
)
_INPLACE_FUNCTIONS: frozenset[Any] = frozenset({operator.iadd, operator.imul})

_Axis = tuple[int, int, int]  # (size K, stride s, start a): unit y reads rows a+ys … a+ys+K-1
_Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (end exclusive)


@dataclass
class _Step:
    """One node of the incremental prefix."""

    node: fx.Node
    kind: Literal["input", "pointwise", "window", "merge"]
    sources: tuple[fx.Node, ...] = ()
    geometry: tuple[_Axis, _Axis] | None = None  # window steps
    window_fn: Callable[[Tensor], Tensor] | None = None  # window steps: runs on a padded crop
    pad_value: float = 0.0
    # Filled by the planner: the crop each mask recomputes, per mask (same size for all).
    size: tuple[int, int] = (0, 0)
    starts: list[tuple[int, int]] = field(default_factory=list)
    affected: list[_Box] = field(default_factory=list)
    same_crop: dict[fx.Node, bool] = field(default_factory=dict)  # merge: source crop == ours
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # window: left, right, top, bottom
    in_size: tuple[int, int] = (0, 0)  # window: the input crop it reads
    gathers: dict[fx.Node, _Gather] = field(default_factory=dict)
    materialize: _Gather | None = None  # live values: how to paste the crop into the map
    patch: _Gather | None = None  # the input step: where each mask's patch is


def _tensors_in(obj: Any) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg(obj, lambda n: found.append(n) or n)  # type: ignore[func-returns-value]
    return found


def _only_user(node: fx.Node) -> bool:
    return len(node.users) == 1


def _classify(
    traced: _Traced, node: fx.Node, values: dict[fx.Node, Any], known: set[fx.Node]
) -> _Step | None:
    """What kind of step `node` is, or None if the incremental prefix must end before it."""
    value = values.get(node)
    if not (isinstance(value, Tensor) and value.dim() == 4 and value.is_floating_point()):
        return None
    sources = tuple(dict.fromkeys(_tensors_in((node.args, node.kwargs))))
    if not sources or any(s not in known for s in sources):
        return None
    spatial = tuple(value.shape[-2:])
    if node.op == "call_module":
        m = traced.modules[str(node.target)]
        if len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], fx.Node):
            return None
        if getattr(m, "inplace", False) and not _only_user(node.args[0]):
            return None
        if isinstance(m, _POINTWISE_MODULES):
            if m.training and isinstance(m, nn.BatchNorm2d):
                return None
            same = all(tuple(values[s].shape[-2:]) == spatial for s in sources)
            return _Step(node, "pointwise", sources) if same else None
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            return _window_step(node, m, values[node.args[0]], value)
        return None
    if node.op == "call_function":
        ok = node.target in _POINTWISE_FUNCTIONS
        if node.target is torch.cat:
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            ok = dim in (1, -3)
    elif node.op == "call_method":
        ok = node.target in _POINTWISE_METHODS
    else:
        return None
    if not ok:
        return None
    mutated = node.args[0] if node.args else None
    in_place = node.target in _INPLACE_FUNCTIONS or bool(node.kwargs.get("inplace"))
    if in_place and not (isinstance(mutated, fx.Node) and _only_user(mutated)):
        return None
    if any(tuple(values[s].shape[-2:]) != spatial for s in sources):
        return None
    # Every other argument must be a plain number (no tensors that could broadcast spatially).
    leaves: list[Any] = []
    for a in (*node.args, *node.kwargs.values()):
        if isinstance(a, (list, tuple)):
            leaves.extend(a)
        else:
            leaves.append(a)
    if any(isinstance(a, Tensor) for a in leaves):
        return None
    return _Step(node, "pointwise" if len(sources) == 1 else "merge", sources)


def _geometry(m: nn.Module, inp: Tensor) -> tuple[_Axis, _Axis] | None:
    """(size, stride, start) per axis of `m`'s output units over its input, traced."""
    probe = inp.clone()
    try:
        with RFTracker() as tracker:
            tracker.watch(probe)
            rf = tracker.field(m(probe))
    except Exception:
        return None
    if rf is None:
        return None
    return (rf.size[0], rf.stride[0], rf.start[0]), (rf.size[1], rf.stride[1], rf.start[1])


def _padded_twin(m: nn.Module, inp: Tensor, out: Tensor) -> Callable[[Tensor], Tensor] | None:
    """For a convolution that pads symmetrically in its own forward (TF-SAME at stride 1, say):
    one `F.conv2d` call with that padding, checked on the clean input. It saves the padded
    copy of the input, and computes the same sums."""
    if not isinstance(m, nn.Conv2d) or m.padding_mode != "zeros":
        return None
    geometry = _geometry(m, inp)
    if geometry is None:
        return None
    (_, _, ah), (_, _, aw) = geometry
    if ah > 0 or aw > 0:
        return None
    conv, padding = m, (-ah, -aw)

    def fn(t: Tensor) -> Tensor:
        return F.conv2d(t, conv.weight, conv.bias, conv.stride, padding, conv.dilation, conv.groups)

    try:
        twin = fn(inp)
    except Exception:
        return None
    if not _close(twin, out):
        return None
    return fn


def _window_step(node: fx.Node, m: nn.Module, inp: Tensor, out: Tensor) -> _Step | None:
    """A conv or pool: its geometry from receptive-field arithmetic, and a functional twin
    that runs on an explicitly padded crop, checked against the module on the clean input."""
    geometry = _geometry(m, inp)
    if geometry is None:
        return None
    fn: Callable[[Tensor], Tensor]
    pad_value = 0.0
    if isinstance(m, nn.Conv2d):
        conv = m

        def fn(t: Tensor) -> Tensor:
            return F.conv2d(t, conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups)

    elif isinstance(m, nn.MaxPool2d):
        pool = m
        pad_value = -math.inf

        def fn(t: Tensor) -> Tensor:
            return F.max_pool2d(t, pool.kernel_size, pool.stride, 0, pool.dilation)

    elif isinstance(m, nn.AvgPool2d):
        avg = m

        def fn(t: Tensor) -> Tensor:
            return F.avg_pool2d(
                t, avg.kernel_size, avg.stride, 0, divisor_override=avg.divisor_override
            )

    else:
        return None
    (kh, sh, ah), (kw, sw, aw) = geometry
    oh, ow = int(out.shape[-2]), int(out.shape[-1])
    ih, iw = int(inp.shape[-2]), int(inp.shape[-1])
    pad = (-aw, (ow - 1) * sw + kw - iw + aw, -ah, (oh - 1) * sh + kh - ih + ah)
    try:
        twin = fn(F.pad(inp, list(pad), value=pad_value))
    except Exception:
        return None
    if not _close(twin, out):
        return None
    if geometry == ((1, 1, 0), (1, 1, 0)):  # a 1×1 conv: pointwise on crops
        return _Step(node, "pointwise", (node.args[0],), window_fn=fn)  # type: ignore[arg-type]
    return _Step(
        node,
        "window",
        (node.args[0],),  # type: ignore[arg-type]
        geometry=geometry,
        window_fn=fn,
        pad_value=pad_value,
    )


_FRESH_MODULES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)
_FRESH_FUNCTIONS: frozenset[Any] = frozenset(
    {operator.add, operator.sub, operator.mul, torch.add, torch.sub, torch.mul, torch.cat}
)


def _in_place(traced: _Traced, node: fx.Node) -> Callable[[Tensor], Tensor] | None:
    """The in-place twin of an activation module, when its input is a fresh tensor (a conv,
    BN or add output) that nothing else reads: the same arithmetic without allocating (and
    page-faulting) a new map per call."""
    if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
        return None
    src = node.args[0]
    if not isinstance(src, fx.Node) or len(src.users) != 1:
        return None
    # Look through ops that hand back their input (a folded BN's identity, eval dropout).
    while src.op == "call_module" and isinstance(
        traced.modules[str(src.target)], (nn.Identity, nn.Dropout, nn.Dropout2d)
    ):
        up = src.args[0] if len(src.args) == 1 else None
        if not isinstance(up, fx.Node) or len(up.users) != 1:
            return None
        src = up
    fresh = (
        src.op == "call_module" and isinstance(traced.modules[str(src.target)], _FRESH_MODULES)
    ) or (src.op == "call_function" and src.target in _FRESH_FUNCTIONS)
    if not fresh:
        return None
    m = traced.modules[str(node.target)]
    kind = type(m)
    if kind is nn.ReLU:
        return torch.relu_
    if kind is nn.ReLU6:
        return lambda t: F.hardtanh_(t, 0.0, 6.0)
    if isinstance(m, nn.Hardtanh) and kind is nn.Hardtanh:
        lo, hi = float(m.min_val), float(m.max_val)
        return lambda t: F.hardtanh_(t, lo, hi)
    if isinstance(m, nn.LeakyReLU) and kind is nn.LeakyReLU:
        slope = float(m.negative_slope)
        return lambda t: F.leaky_relu_(t, slope)
    if kind is nn.SiLU:
        return lambda t: F.silu(t, inplace=True)
    if kind is nn.Hardswish:
        return lambda t: F.hardswish(t, inplace=True)
    return None


def _influence(lo: int, hi: int, axis: _Axis, n_out: int) -> tuple[int, int]:
    """Output units whose taps meet input rows [lo, hi)."""
    k, s, a = axis
    first = -((a + k - 1 - lo) // s)  # ceil((lo - a - k + 1) / s)
    last = (hi - 1 - a) // s
    return max(first, 0), min(last + 1, n_out)


def _crop_starts(
    boxes: list[_Box], hn: int, wn: int
) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """One crop size for all masks (the largest box, at least 1×1) and each mask's crop start,
    kept inside the map."""
    h = max(1, *(b[1] - b[0] for b in boxes))
    w = max(1, *(b[3] - b[2] for b in boxes))
    return (h, w), [(max(0, min(b[0], hn - h)), max(0, min(b[2], wn - w))) for b in boxes]


@dataclass
class _Plan:
    """Which nodes run on crops, and each mask's crop at each of them."""

    traced: _Traced
    steps: list[_Step]
    rest: list[fx.Node]  # run whole, batched
    live: list[fx.Node]  # prefix values the rest reads
    twins: dict[fx.Node, Callable[[Tensor], Tensor]]  # rest convs run as one padded conv
    tail: frozenset[fx.Node]  # the pooled classifier: float32 in fast mode
    in_place: dict[fx.Node, Callable[[Tensor], Tensor]]  # activations run in place
    positions: Sequence[tuple[int, int]]
    window: int
    fmt: torch.memory_format

    @staticmethod
    def build(
        traced: _Traced,
        clean: Tensor,
        positions: Sequence[tuple[int, int]],
        grid: tuple[int, int],
        window: int,
        switch_fraction: float,
        fmt: torch.memory_format,
    ) -> _Plan:
        """Classify nodes, place every mask's crops, stop where crops get too big, and check
        the result against full forwards (`grid`: window positions per column and per row)."""
        values = _clean_values(traced, clean)
        steps = [_Step(traced.nodes[0], "input")]
        known = {traced.nodes[0]}
        for node in traced.nodes[1:]:
            if node.op == "output":
                break
            step = _classify(traced, node, values, known)
            if step is None:
                break
            steps.append(step)
            known.add(node)
        by_node: dict[fx.Node, _Step] = {}
        keep: list[_Step] = []
        for step in steps:
            _place(step, by_node, values, positions, window)
            hn, wn = (int(d) for d in values[step.node].shape[-2:])
            if step.kind != "input" and step.size[0] * step.size[1] > switch_fraction * hn * wn:
                break
            by_node[step.node] = step
            keep.append(step)
        twins = {}
        for node in traced.nodes:
            first = node.args[0] if node.args else None
            if node.op == "call_module" and len(node.args) == 1 and isinstance(first, fx.Node):
                arg, out = values.get(first), values.get(node)
                if not node.kwargs and isinstance(arg, Tensor) and isinstance(out, Tensor):
                    fn = _padded_twin(traced.modules[str(node.target)], arg, out)
                    if fn is not None:
                        twins[node] = fn
        plan = _Plan._assemble(traced, values, keep, positions, window, fmt, twins)
        if len(keep) > 1 and not plan._agrees(values, clean, grid):
            plan = _Plan._assemble(traced, values, keep[:1], positions, window, fmt, twins)
        return plan

    @staticmethod
    def _assemble(
        traced: _Traced,
        values: dict[fx.Node, Any],
        steps: list[_Step],
        positions: Sequence[tuple[int, int]],
        window: int,
        fmt: torch.memory_format,
        twins: dict[fx.Node, Callable[[Tensor], Tensor]],
    ) -> _Plan:
        inside = {s.node for s in steps}
        rest = [n for n in traced.nodes if n not in inside]
        live = [s.node for s in steps if any(u not in inside for u in s.node.users)]
        _plan_gathers(steps, live, values)
        twins = {n: f for n, f in twins.items() if n not in inside}
        tail = _classifier_tail(traced, values) - inside
        in_place = {}
        for node in traced.nodes:
            if node not in tail and node not in live:
                fn = _in_place(traced, node)
                if fn is not None:
                    in_place[node] = fn
        return _Plan(traced, steps, rest, live, twins, tail, in_place, positions, window, fmt)

    def _agrees(self, values: dict[fx.Node, Any], clean: Tensor, grid: tuple[int, int]) -> bool:
        """Do the maps the plan pastes together equal whole forwards, on the corner and centre
        windows?"""
        n = len(self.positions)
        rows, cols = grid
        check = sorted({0, cols - 1, n - cols, n - 1, (rows // 2) * cols + cols // 2})
        full = _Plan._assemble(
            self.traced, values, self.steps[:1], self.positions, self.window, self.fmt, {}
        )
        out = self.traced.nodes[-1]
        logits = values[out]
        if not isinstance(logits, Tensor) or logits.dim() != 2:
            return False
        cls = [ClassTarget(int(logits.argmax(1)[0]))]
        patch = torch.zeros_like(clean)  # any content differs from the image; zeros will do
        try:
            nothing = contextlib.nullcontext
            a = _IncrementalRunner(self, None, clean, patch, cls[0], nothing, values)
            b = _IncrementalRunner(full, None, clean, patch, cls[0], nothing, values)
            # The prefix values the rest reads: equal up to float rounding (a wrong crop is
            # off by the size of the activations themselves).
            got = a.live(check)
            env = b.live(check)
            remaining = set(self.live)
            for node in self.traced.nodes[1:]:
                if not remaining:
                    break
                env[node] = self.traced.run(node, env)
                if node in remaining:
                    remaining.discard(node)
                    if not _close(got[node], env[node]):
                        return False
        except Exception:
            return False
        return True


def _clean_values(
    traced: _Traced,
    clean: Tensor,
    precision: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    tail: frozenset[fx.Node] = frozenset(),
) -> dict[fx.Node, Any]:
    """Every node's value on the clean image (copies, so later in-place ops cannot touch
    them), under `precision` except for the `tail`, which runs in float32."""
    env: dict[fx.Node, Any] = {traced.nodes[0]: clean}
    kept: dict[fx.Node, Any] = {traced.nodes[0]: clean}
    with precision():
        for node in traced.nodes[1:]:
            if node in tail:
                break
            v = traced.run(node, env)
            env[node] = v
            kept[node] = v.clone() if isinstance(v, Tensor) else v
    for node in traced.nodes[1:]:
        if node in tail:
            v = _run_float32(traced, node, env)
            env[node] = v
            kept[node] = v.clone() if isinstance(v, Tensor) else v
    return kept


def _run_float32(traced: _Traced, node: fx.Node, env: dict[fx.Node, Any]) -> Any:
    """Run `node` outside autocast, its reduced-precision inputs cast to float32."""

    def wide(v: Any) -> Any:
        if isinstance(v, Tensor) and v.dtype in (torch.bfloat16, torch.float16):
            return v.float()
        return v

    inputs = {n: wide(env[n]) for n in node.all_input_nodes}
    device = next((v.device.type for v in inputs.values() if isinstance(v, Tensor)), "cpu")
    with torch.autocast(device, enabled=False):
        return traced.run(node, inputs)


def _classifier_tail(traced: _Traced, values: dict[fx.Node, Any]) -> frozenset[fx.Node]:
    """The nodes after the last one with a spatial map larger than 1×1: the pooled classifier,
    which fast mode runs in float32 (in bfloat16, EfficientNet-Lite0's 1280-input fc alone
    costs up to 0.01 in probability)."""
    last = 0
    for i, node in enumerate(traced.nodes):
        v = values.get(node)
        if isinstance(v, Tensor) and v.dim() >= 3 and int(v.shape[-2]) * int(v.shape[-1]) > 1:
            last = i
    return frozenset(traced.nodes[last + 1 :])


def _place(
    step: _Step,
    by_node: dict[fx.Node, _Step],
    values: dict[fx.Node, Any],
    positions: Sequence[tuple[int, int]],
    window: int,
) -> None:
    """Each mask's affected box and recomputed crop at `step` (region-of-influence arithmetic)."""
    hn, wn = (int(d) for d in values[step.node].shape[-2:])
    if step.kind == "input":
        step.affected = [(y, y + window, x, x + window) for y, x in positions]
        step.size = (window, window)
        step.starts = [(y, x) for y, x in positions]
        return
    srcs = [by_node[s] for s in step.sources]
    if step.kind == "pointwise":
        src = srcs[0]
        step.affected, step.size, step.starts = src.affected, src.size, src.starts
        return
    if step.kind == "window":
        assert step.geometry is not None
        gy, gx = step.geometry
        boxes = []
        for y0, y1, x0, x1 in srcs[0].affected:
            a, b = _influence(y0, y1, gy, hn)
            c, d = _influence(x0, x1, gx, wn)
            boxes.append((a, b, c, d))
        step.affected = boxes
        step.size, step.starts = _crop_starts(boxes, hn, wn)
        ih, iw = (int(d) for d in values[step.sources[0]].shape[-2:])
        (kh, sh, ah), (kw, sw, aw) = gy, gx
        crop_h, crop_w = (step.size[0] - 1) * sh + kh, (step.size[1] - 1) * sw + kw
        top = max(0, -min(ah + y * sh for y, _ in step.starts))
        left = max(0, -min(aw + x * sw for _, x in step.starts))
        bottom = max(0, max(ah + y * sh + crop_h for y, _ in step.starts) - ih)
        right = max(0, max(aw + x * sw + crop_w for _, x in step.starts) - iw)
        step.pad = (left, right, top, bottom)
        step.in_size = (crop_h, crop_w)
        return
    # merge: the union of the sources' affected boxes
    boxes = []
    for m in range(len(positions)):
        bs = [s.affected[m] for s in srcs]
        boxes.append(
            (
                min(b[0] for b in bs),
                max(b[1] for b in bs),
                min(b[2] for b in bs),
                max(b[3] for b in bs),
            )
        )
    step.affected = boxes
    step.size, step.starts = _crop_starts(boxes, hn, wn)
    step.same_crop = {s.node: s.size == step.size and s.starts == step.starts for s in srcs}


# ---- running the plan ------------------------------------------------------------------------
_Inner = tuple[
    int, int, int, int, int, int
]  # dy0, dy1, dx0, dx1 in the crop; sy0, sx0 in the source


@dataclass
class _Gather:
    """How to build one input crop per mask: the clean map around it (rows `origin` of a
    possibly padded clean map, `width` columns wide) and, inside it, the overlap with the
    source's recomputed crop (`inner`)."""

    size: tuple[int, int]
    origin: list[tuple[int, int]]
    inner: list[_Inner]
    width: int  # of the clean map the crop is read from
    base: Tensor = field(init=False)  # (masks,) flat index of each crop's top-left pixel
    grid: Tensor = field(init=False)  # (h·w,) flat offsets of the crop's pixels

    def __post_init__(self) -> None:
        h, w = self.size
        self.base = torch.tensor([y * self.width + x for y, x in self.origin], dtype=torch.long)
        rows = torch.arange(h).view(-1, 1) * self.width
        self.grid = (rows + torch.arange(w).view(1, -1)).reshape(-1)


def _gather(
    size: tuple[int, int],
    regions: Sequence[tuple[int, int]],
    pad: tuple[int, int],
    width: int,
    src_size: tuple[int, int],
    src_starts: Sequence[tuple[int, int]],
) -> _Gather:
    """`regions`: each mask's crop top-left in map coordinates; `pad`: (top, left) padding of
    the clean map it is read from, `width` that map's padded width."""
    h, w = size
    origin, inner = [], []
    for (ry, rx), (sy, sx) in zip(regions, src_starts, strict=True):
        origin.append((ry + pad[0], rx + pad[1]))
        y0, y1 = max(ry, sy), min(ry + h, sy + src_size[0])
        x0, x1 = max(rx, sx), min(rx + w, sx + src_size[1])
        if y0 >= y1 or x0 >= x1:
            inner.append((0, 0, 0, 0, 0, 0))
        else:
            inner.append((y0 - ry, y1 - ry, x0 - rx, x1 - rx, y0 - sy, x0 - sx))
    return _Gather(size, origin, inner, width)


def _plan_gathers(steps: list[_Step], live: list[fx.Node], values: dict[fx.Node, Any]) -> None:
    """Attach to each step the gathers its inputs need (and to the plan's live values)."""
    by_node = {s.node: s for s in steps}
    for step in steps:
        if step.kind == "window":
            assert step.geometry is not None
            (_, sh, ah), (_, sw, aw) = step.geometry
            src = by_node[step.sources[0]]
            size = step.in_size
            regions = [(ah + y * sh, aw + x * sw) for y, x in step.starts]
            width = int(values[src.node].shape[-1]) + step.pad[0] + step.pad[1]
            step.gathers[src.node] = _gather(
                size, regions, (step.pad[2], step.pad[0]), width, src.size, src.starts
            )
        elif step.kind == "merge":
            for s in step.sources:
                if not step.same_crop[s]:
                    src = by_node[s]
                    width = int(values[s].shape[-1])
                    step.gathers[s] = _gather(
                        step.size, step.starts, (0, 0), width, src.size, src.starts
                    )
    first = steps[0]
    first.patch = _gather(
        first.size,
        first.starts,
        (0, 0),
        int(values[first.node].shape[-1]),
        first.size,
        first.starts,
    )
    for node in live:
        step = by_node[node]
        hn, wn = (int(d) for d in values[node].shape[-2:])
        step.materialize = _gather(
            (hn, wn), [(0, 0)] * len(step.starts), (0, 0), wn, step.size, step.starts
        )


class _IncrementalRunner(_Runner):
    """Runs a plan for one image: crops through the prefix, whole maps after it."""

    def __init__(
        self,
        plan: _Plan,
        work: ConvModel | None,
        clean: Tensor,
        patch: Tensor,
        target: ClassTarget,
        precision: Callable[[], contextlib.AbstractContextManager[Any]],
        values: dict[fx.Node, Any] | None = None,
    ) -> None:
        self.plan, self.patch, self.precision = plan, patch, precision
        self.index = target.index
        traced = plan.traced
        if values is None:
            values = _clean_values(traced, clean, precision, plan.tail)
        logits = values[traced.nodes[-1]]
        if not isinstance(logits, Tensor) or logits.dim() != 2:
            raise UserInputError(
                f"the model returned {type(logits).__name__}, not (B, K) class scores."
            )
        k = int(logits.shape[1])
        if not 0 <= self.index < k:
            raise UserInputError(f"class index {self.index} is out of range 0..{k - 1}.")
        self.p0 = float(logits.float().softmax(1)[0, self.index])
        self.values = values
        # Clean maps as (H·W, C) matrices (views for channels-last maps), padded for windows.
        self.rows: dict[tuple[fx.Node, fx.Node], Tensor] = {}
        for step in plan.steps:
            for src in step.gathers:
                clean_src = values[src]
                if step.kind == "window":
                    clean_src = F.pad(clean_src, list(step.pad), value=step.pad_value)
                self.rows[step.node, src] = _pixel_rows(clean_src)
        self.patch_rows = _pixel_rows(patch)
        self.by_node = {s.node: s for s in plan.steps}

    def _assemble(
        self, g: _Gather, rows: Tensor | None, clean: Tensor, crop: Tensor, idx: list[int]
    ) -> Tensor:
        """(B, C, h, w): the clean map around (gathered from `rows`, or all of `clean` when
        `rows` is None), the recomputed `crop` pasted inside."""
        n = len(idx)
        if rows is None:
            out = torch.empty(
                (n, *clean.shape[1:]), dtype=clean.dtype, device=clean.device
            ).contiguous(memory_format=self.plan.fmt)
            out.copy_(clean.expand(n, -1, -1, -1))
        else:
            out = _take(rows, g, idx, self.plan.fmt)
        groups: dict[_Inner, list[int]] = {}
        for b, m in enumerate(idx):
            groups.setdefault(g.inner[m], []).append(b)
        for (dy0, dy1, dx0, dx1, sy0, sx0), bs in groups.items():
            if dy0 >= dy1:
                continue
            src = crop[:, :, sy0 : sy0 + dy1 - dy0, sx0 : sx0 + dx1 - dx0]
            if len(bs) == n:
                out[:, :, dy0:dy1, dx0:dx1] = src
            elif len(bs) == 1:
                out[bs[0], :, dy0:dy1, dx0:dx1] = src[bs[0]]
            else:
                sel = torch.tensor(bs, device=out.device)
                out[sel, :, dy0:dy1, dx0:dx1] = src[sel]
        return out

    def live(self, idx: list[int]) -> dict[fx.Node, Any]:
        """The masked images' values of every prefix value the rest reads, as whole maps."""
        crops: dict[fx.Node, Tensor] = {}
        for step in self.plan.steps:
            crops[step.node] = self._step(step, idx, crops)
        env: dict[fx.Node, Any] = {}
        for node in self.plan.live:
            g = self.by_node[node].materialize
            assert g is not None
            env[node] = self._assemble(g, None, self.values[node], crops[node], idx)
        return env

    def drops(self, idx: list[int]) -> list[float]:
        plan, traced = self.plan, self.plan.traced
        with self.precision():
            env = self.live(idx)
            twins, tail, in_place = plan.twins, plan.tail, plan.in_place
            for node in plan.rest:
                if node in tail:
                    break
                fn = twins.get(node) or in_place.get(node)
                if fn is None:
                    env[node] = traced.run(node, env)
                else:
                    env[node] = fn(env[node.args[0]])  # type: ignore[index]
        for node in plan.rest:
            if node in tail:
                env[node] = _run_float32(traced, node, env)
        logits = env[traced.nodes[-1]]
        p = logits.float().softmax(1)[:, self.index]
        return [self.p0 - v for v in p.tolist()]

    def _step(self, step: _Step, idx: list[int], crops: dict[fx.Node, Tensor]) -> Tensor:
        if step.kind == "input":
            assert step.patch is not None
            return _take(self.patch_rows, step.patch, idx, self.plan.fmt)
        if step.kind == "window":
            src = step.sources[0]
            g = step.gathers[src]
            x_in = self._assemble(g, self.rows[step.node, src], self.values[src], crops[src], idx)
            assert step.window_fn is not None
            return step.window_fn(x_in)
        if step.kind == "pointwise" and step.window_fn is not None:  # 1×1 conv
            return step.window_fn(crops[step.sources[0]])
        fn = self.plan.in_place.get(step.node)
        if fn is not None:
            return fn(crops[step.sources[0]])
        inputs: dict[fx.Node, Any] = {}
        for s in step.sources:
            gs = step.gathers.get(s)
            if gs is None:
                inputs[s] = crops[s]
            else:
                inputs[s] = self._assemble(
                    gs, self.rows[step.node, s], self.values[s], crops[s], idx
                )
        return self.plan.traced.run(step.node, inputs)  # type: ignore[no-any-return]


def _pixel_rows(t: Tensor) -> Tensor:
    """(1, C, H, W) → (H·W, C): one row per pixel (a view of a channels-last map)."""
    c = int(t.shape[1])
    return t[0].permute(1, 2, 0).reshape(-1, c)


def _take(rows: Tensor, g: _Gather, idx: list[int], fmt: torch.memory_format) -> Tensor:
    """Gather each mask's crop from a (H·W, C) pixel matrix: (B, C, h, w) channels-last."""
    h, w = g.size
    sel = torch.tensor(idx, dtype=torch.long)
    flat = (g.base[sel].view(-1, 1) + g.grid.view(1, -1)).reshape(-1).to(rows.device)
    out = rows.index_select(0, flat).view(len(idx), h, w, -1).permute(0, 3, 1, 2)
    return out if fmt == torch.channels_last else out.contiguous(memory_format=fmt)


def _iter_batches(n: int, size: int) -> Iterator[list[int]]:
    for start in range(0, n, size):
        yield list(range(start, min(start + size, n)))
