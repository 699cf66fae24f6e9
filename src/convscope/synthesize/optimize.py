"""The one optimization loop of every synthesis technique:

    parameterized image → random transforms → model (through the Probe) → objective → step

    result = optimize(model, channel("relu4_3", 42), image_param(224), steps=256,
                      transforms=standard(), on_progress=print)
    result.image  # (1, 3, 224, 224) in [0, 1]

It maximizes the objective (it steps on minus its value). The forward pass stops after the
deepest layer the objective needs, unless it needs the model's output. Each step emits a
`SynthesisProgress` event (losses by term; a preview image every `preview_every` steps);
callbacks run after each step and may change the image (Yosinski et al.'s blur and clipping,
PGD's projection) or stop the run by returning False. The loop never prints, shows or saves
anything but the `checkpoint` it is asked to keep, from which `resume=True` continues
exactly as if uninterrupted. A `tile` size optimizes images larger than memory allows: each
step, the image is cut into tiles at a random offset and each tile's gradient is computed on
its own; objectives see where the tile lies (`Inputs.window`), so the tiles' losses add up to
the whole image's, Gram matrices included (summed over the tiles in a first pass). The model
is left as it was: no hook, no `.grad`, the same `requires_grad` flags.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from convscope.data.stream import save_tensors
from convscope.errors import UserInputError
from convscope.events import Progress, ProgressCallback, no_progress
from convscope.models.base import ConvModel
from convscope.probe import Probe
from convscope.synthesize.objectives import OUTPUT, Inputs, Objective, Window
from convscope.synthesize.steps import make_optimizer

__all__ = [
    "CHECKPOINT_FORMAT",
    "Callback",
    "Run",
    "StepEstimate",
    "StepState",
    "SynthesisProgress",
    "SynthesisResult",
    "estimate",
    "optimize",
    "seeded",
    "tile_windows",
]

CHECKPOINT_FORMAT = "convscope-synthesis-checkpoint/1"
Schedule = Literal["constant", "cosine"] | Callable[[int, int], float]


@dataclass(frozen=True)
class SynthesisProgress(Progress):
    """A step of the loop: `metrics` holds each term's loss (and "loss", their sum);
    `preview` the current image (B, 3, H, W) in [0, 1] every `preview_every` steps."""

    preview: Tensor | None = None

    @property
    def losses(self) -> Mapping[str, float]:
        return self.metrics


@dataclass
class StepState:
    """What a callback sees after each step."""

    step: int  # steps done (1-based)
    steps: int  # steps asked for
    param: nn.Module
    loss: float
    losses: dict[str, float]
    optimizer: torch.optim.Optimizer

    @functools.cached_property
    def image(self) -> Tensor:
        """(B, 3, H, W) in [0, 1], detached: the image after this step (made on demand)."""
        with torch.no_grad():
            image: Tensor = self.param()
        return image.detach()


Callback = Callable[[StepState], bool | None]
"""Called after every step; returning False stops the run."""


@dataclass(frozen=True)
class SynthesisResult:
    image: Tensor  # (B, 3, H, W) in [0, 1], on the CPU
    steps: int  # steps done (less than asked when a callback stopped the run)
    losses: dict[str, float]  # the last step's losses by term
    history: list[float] = field(default_factory=list)  # total loss after every step
    stopped_early: bool = False
    optimizer_state: dict[str, Any] | None = None  # the optimizer's state_dict at the end


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """torch's global RNG seeded with `seed` inside the block and restored after it, so that
    a recipe's random start and the loop's random transforms repeat with the seed and touch
    nothing outside."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _lr_factor(schedule: Schedule, step: int, steps: int) -> float:
    if callable(schedule):
        return float(schedule(step, steps))
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * step / max(1, steps)))
    raise UserInputError(f"unknown learning-rate schedule {schedule!r}; use constant or cosine.")


def _check(
    model: ConvModel, objective: Objective, steps: int, tile: int | None, align: int, halo: int
) -> list[str]:
    if not isinstance(objective, Objective):
        raise UserInputError(f"the objective must be an Objective, not {type(objective).__name__}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UserInputError(f"steps must be at least 1, got {steps!r}.")
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 8):
        raise UserInputError(f"the tile must be at least 8 pixels, got {tile!r}.")
    if isinstance(align, bool) or not isinstance(align, int) or align < 1:
        raise UserInputError(f"the tile alignment must be at least 1 pixel, got {align!r}.")
    if tile is not None and tile % align:
        raise UserInputError(f"the tile ({tile} px) must be a multiple of its alignment {align}.")
    if isinstance(halo, bool) or not isinstance(halo, int) or halo < 0 or halo % align:
        raise UserInputError(
            f"the tile halo must be 0 or more pixels, a multiple of {align}, got {halo!r}."
        )
    layers = sorted(objective.layers - {OUTPUT})
    for layer in layers:
        model.resolve(layer)  # an unknown layer is a one-sentence error before any work
    return layers


@contextlib.contextmanager
def _frozen(model: ConvModel) -> Iterator[None]:
    """The model's parameters need no gradient during the loop; their flags come back."""
    flags = [(p, p.requires_grad) for p in model.module.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _tiles(h: int, w: int, tile: int) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) boxes of at most `tile` px covering an h×w image."""
    ys = list(range(0, h, tile))
    xs = list(range(0, w, tile))
    return [(y, min(y + tile, h), x, min(x + tile, w)) for y in ys for x in xs]


def _cuts(n: int, tile: int, offset: int) -> list[tuple[int, int]]:
    """[a, b) spans of at most `tile` covering 0..n, the first cut at `offset`."""
    edges = [0, *range(offset or tile, n, tile), n]
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]


def tile_windows(h: int, w: int, tile: int, *, align: int = 1, halo: int = 0) -> list[Window]:
    """One tiled step's windows over an h×w image, at a random offset (a multiple of
    `align` below `tile`, from torch's RNG) so that the seams move every step.

    Without a halo the image is rolled by the offset and cut into tiles of at most `tile`
    px, which cover every pixel once (the edges wrap around: right for images that tile, as
    DeepDream's may). With a `halo` the image is not rolled: its cores of at most `tile` px,
    cut at the offset, cover every pixel once, and each tile's box adds `halo` px of context
    on every side (inside the image), so that features over the core are the whole image's
    own, exactly, when the halo covers the deepest layer's reach (half its receptive field)."""
    oy, ox = (int(v) * align for v in torch.randint(max(1, tile // align), (2,)))
    if halo == 0:
        return [Window(h, w, oy, ox, *box) for box in _tiles(h, w, tile)]
    windows = []
    for y0, y1 in _cuts(h, tile, oy):
        for x0, x1 in _cuts(w, tile, ox):
            box = (max(0, y0 - halo), min(h, y1 + halo), max(0, x0 - halo), min(w, x1 + halo))
            windows.append(Window(h, w, 0, 0, *box, core=(y0, y1, x0, x1)))
    return windows


class _Step:
    """One evaluation: image → transforms → model → objective, forward and backward."""

    def __init__(
        self,
        model: ConvModel,
        objective: Objective,
        param: nn.Module,
        transforms: nn.Module | None,
        probe: Probe | None,
        tile: int | None,
        precision: str,
        align: int = 1,
        halo: int = 0,
    ) -> None:
        self.model, self.objective, self.param = model, objective, param
        self.transforms, self.probe, self.tile = transforms, probe, tile
        self.autocast = precision == "bf16"
        self.align, self.halo = align, halo

    def _inputs(self, image: Tensor, window: Window | None) -> Inputs:
        x = image if self.transforms is None else self.transforms(image)
        model_input = self.model.preprocess.normalize(x)
        acts: Mapping[str, Tensor] = {}
        output = None
        with torch.autocast(model_input.device.type, torch.bfloat16, enabled=self.autocast):
            if self.probe is not None:
                output = self.probe.run(model_input)
                acts = {k: v.float() for k, v in self.probe.activations.items()}
            elif self.objective.needs_output:
                output = self.model(model_input)
        if output is not None:
            output = output.float()
        return Inputs(acts, image, output, self.model.preprocess, window)

    def __call__(self) -> tuple[float, dict[str, float]]:
        """Gradients of minus the objective in the parameters' `.grad`; (loss, losses)."""
        image = self.param()
        h, w = int(image.shape[-2]), int(image.shape[-1])
        if self.tile is None or max(h, w) <= self.tile:
            value, losses = self.objective.evaluate(self._inputs(image, None))
            (-value).backward()  # type: ignore[no-untyped-call]
            return float(-value.detach()), {k: float(v) for k, v in losses.items()}
        # Tiles at a random offset: the seams move every step, so none stays. The tiles read
        # a detached copy of the image, so each tile's graph (and its saved activations) is
        # freed by its own backward; their gradients meet in the copy's `.grad`, which then
        # flows back through the parameterization once.
        windows = tile_windows(h, w, self.tile, align=self.align, halo=self.halo)
        shift = (windows[0].dy, windows[0].dx)
        rolled = image.detach()
        if any(shift):
            rolled = torch.roll(rolled, shifts=shift, dims=(-2, -1))
        rolled.requires_grad_(True)
        totals: dict[int, Tensor] | None = None
        if self.objective.has_statistics:  # first pass: whole-image statistics, no graph
            totals = {}
            with torch.no_grad():
                for win in windows:
                    part = rolled[..., win.y0 : win.y1, win.x0 : win.x1].detach()
                    for k, stat in self.objective.statistics(self._inputs(part, win)).items():
                        totals[k] = stat if k not in totals else totals[k] + stat
        total = 0.0
        summed: dict[str, float] = {}
        for win in windows:
            part = rolled[..., win.y0 : win.y1, win.x0 : win.x1]
            value, losses = self.objective.evaluate(self._inputs(part, win), totals)
            (-value).backward()  # type: ignore[no-untyped-call]
            total += float(-value.detach())
            for key, v in losses.items():
                summed[key] = summed.get(key, 0.0) + float(v)
            del value, losses
            if self.probe is not None:  # the tile's activations go before the next forward
                self.probe.activations.clear()
        grad = rolled.grad
        assert grad is not None
        if any(shift):
            grad = torch.roll(grad, shifts=(-shift[0], -shift[1]), dims=(-2, -1))
        image.backward(grad)  # type: ignore[no-untyped-call]
        return total, summed


def _flatten(obj: Any, prefix: str, tensors: dict[str, Tensor]) -> Any:
    """A JSON skeleton of `obj` with its tensors moved into `tensors` (keys by path)."""
    if isinstance(obj, Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, Mapping):
        return {
            "__map__": [[_key(k), _flatten(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]
        }
    if isinstance(obj, (list, tuple)):
        kind = "__list__" if isinstance(obj, list) else "__tuple__"
        return {kind: [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        if isinstance(obj, float) and not math.isfinite(obj):
            return {"__float__": repr(obj)}
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint")


def _key(k: Any) -> Any:
    return {"__int__": k} if isinstance(k, int) else k


def _unflatten(skel: Any, tensors: Mapping[str, Tensor]) -> Any:
    if isinstance(skel, dict):
        if "__tensor__" in skel:
            return tensors[skel["__tensor__"]]
        if "__map__" in skel:
            return {
                (k["__int__"] if isinstance(k, dict) else k): _unflatten(v, tensors)
                for k, v in skel["__map__"]
            }
        if "__list__" in skel:
            return [_unflatten(v, tensors) for v in skel["__list__"]]
        if "__tuple__" in skel:
            return tuple(_unflatten(v, tensors) for v in skel["__tuple__"])
        if "__float__" in skel:
            return float(skel["__float__"])
    return skel


def _save_checkpoint(
    path: Path,
    param: nn.Module,
    opt: torch.optim.Optimizer,
    step: int,
    history: list[float],
    run_id: str,
) -> None:
    tensors: dict[str, Tensor] = {}
    for k, v in param.state_dict().items():
        tensors[f"param.{k}"] = v.detach().cpu().contiguous()
    skeleton = _flatten(opt.state_dict(), "optim", tensors)
    tensors["rng"] = torch.get_rng_state()
    meta = {
        "format": CHECKPOINT_FORMAT,
        "run": run_id,
        "step": str(step),
        "optimizer": json.dumps(skeleton, sort_keys=True),
        "history": json.dumps(history),
    }
    save_tensors(tensors, path, meta)


def _load_checkpoint(
    path: Path, param: nn.Module, opt: torch.optim.Optimizer, run_id: str
) -> tuple[int, list[float]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception:
        raise UserInputError(f"{path} is not a readable synthesis checkpoint.") from None
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise UserInputError(f"{path} is not a convscope synthesis checkpoint.")
    if meta.get("run") != run_id:
        raise UserInputError(
            f"{path} belongs to a different run (another recipe, objective, size or seed); "
            "delete it or drop --resume."
        )
    state = {k.removeprefix("param."): v for k, v in tensors.items() if k.startswith("param.")}
    param.load_state_dict(state)
    opt.load_state_dict(_unflatten(json.loads(meta["optimizer"]), tensors))
    torch.set_rng_state(tensors["rng"])
    return int(meta["step"]), [float(v) for v in json.loads(meta["history"])]


def _run_id(objective: Objective, param: nn.Module, optimizer: str, lr: float, extra: str) -> str:
    shapes = {k: list(v.shape) for k, v in param.state_dict().items()}
    return json.dumps(
        {
            "objective": repr(objective),
            "param": type(param).__name__,
            "shapes": shapes,
            "optimizer": optimizer,
            "lr": lr,
            "recipe": extra,
        },
        sort_keys=True,
    )


def _closure(opt: torch.optim.Optimizer, step_fn: _Step, result: dict[str, Any]) -> float:
    """One evaluation with fresh gradients (L-BFGS may call it several times per step)."""
    opt.zero_grad(set_to_none=True)
    loss, terms = step_fn()
    result["loss"], result["losses"] = loss, terms
    return loss


def optimize(
    model: ConvModel,
    objective: Objective,
    param: nn.Module,
    *,
    transforms: nn.Module | None = None,
    steps: int = 512,
    optimizer: str = "adam",
    lr: float = 0.05,
    schedule: Schedule = "constant",
    callbacks: Sequence[Callback] = (),
    preview_every: int | None = None,
    tile: int | None = None,
    tile_align: int = 1,
    tile_halo: int = 0,
    precision: Literal["fp32", "bf16"] = "fp32",
    optimizer_state: Mapping[str, Any] | None = None,
    checkpoint: Path | None = None,
    checkpoint_every: int = 50,
    resume: bool = False,
    recipe: str = "",
    task: str = "synthesize",
    on_progress: ProgressCallback = no_progress,
) -> SynthesisResult:
    """Maximize `objective` over the image `param()` produces (see the module docstring).

    Args:
        model: the network; the objective's layers are its dotted names or aliases.
        param: an `nn.Module` whose `forward()` returns (B, 3, H, W) in [0, 1] (see
            `convscope.synthesize.params`); its parameters are optimized in place.
        transforms: applied to the image before the model at every step (random ones make
            the image robust, see `convscope.synthesize.transforms`).
        steps: optimizer steps.
        optimizer: "adam", "sgd", "lbfgs", or a classic step rule: "normalized" (g/||g||),
            "mean-abs" (g/mean|g|), "sign" (sign(g)); `lr` is its learning rate.
        schedule: "constant", "cosine" (to 0 at the last step), or `f(step, steps) -> factor`.
        callbacks: called after each step with a `StepState`; False stops the run.
        preview_every: attach the image to every N-th step's progress event.
        tile: optimize tile by tile (at a random offset each step) when the image is larger;
            objectives with whole-image targets see where each tile lies (`Inputs.window`).
        tile_align: the random offsets are multiples of this (a layer's stride, so that
            features cut from a whole-image target line up with the tile's own).
        tile_halo: context around each tile, in pixels (see `tile_windows`): 0 rolls the
            image and lets the edges wrap; half the deepest layer's receptive field makes a
            tiled step equal to a whole-image step.
        precision: "bf16" runs the model under bfloat16 autocast (the objective in float32).
        optimizer_state: a `state_dict` to start the optimizer from (a coarser scale's
            moments, resized: `octaves.resize_optimizer_state`).
        checkpoint: a file to keep the run's state in (every `checkpoint_every` steps, on
            Ctrl-C, and at the end); with `resume`, the run continues from it.
        recipe: a description of the run (recipe name and arguments) that a checkpoint must
            match to be resumed.
        task: the name of the progress events.
    """
    layers = _check(model, objective, steps, tile, tile_align, tile_halo)
    if preview_every is not None and preview_every < 1:
        raise UserInputError(f"preview_every must be at least 1, got {preview_every}.")
    if checkpoint_every < 1:
        raise UserInputError(f"checkpoint_every must be at least 1, got {checkpoint_every}.")
    if precision not in ("fp32", "bf16"):
        raise UserInputError(f"precision must be fp32 or bf16, got {precision!r}.")
    params = [p for p in param.parameters() if p.requires_grad]
    if not params:
        raise UserInputError("the parameterization has no parameters to optimize.")
    opt = make_optimizer(optimizer, params, lr)
    if optimizer == "lbfgs" and tile is not None:
        raise UserInputError("L-BFGS cannot optimize tile by tile; use adam with --tile.")
    if optimizer_state is not None:
        try:
            opt.load_state_dict(dict(optimizer_state))
        except (ValueError, KeyError, RuntimeError) as exc:
            raise UserInputError(f"the optimizer state does not fit this run: {exc}.") from None
    run_id = _run_id(objective, param, optimizer, lr, recipe)
    start = 0
    history: list[float] = []
    if resume and checkpoint is not None and checkpoint.exists():
        start, history = _load_checkpoint(checkpoint, param, opt, run_id)
    probe = None
    if layers:
        probe = Probe(
            model,
            layers,
            detach=False,
            clone="auto",
            stop_early=not objective.needs_output,
        )
    step_fn = _Step(
        model, objective, param, transforms, probe, tile, precision, tile_align, tile_halo
    )
    base_lrs = [g["lr"] for g in opt.param_groups]
    losses: dict[str, float] = {}
    done = start
    stopped = False
    on_progress(SynthesisProgress(task, done, steps, "steps"))
    with _frozen(model), contextlib.ExitStack() as stack:
        if probe is not None:
            stack.enter_context(probe)
        try:
            for step in range(start, steps):
                for g, base in zip(opt.param_groups, base_lrs, strict=True):
                    g["lr"] = base * _lr_factor(schedule, step, steps)
                result: dict[str, Any] = {}
                opt.step(functools.partial(_closure, opt, step_fn, result))
                done = step + 1
                loss, losses = float(result["loss"]), dict(result["losses"])
                history.append(loss)
                state = StepState(done, steps, param, loss, losses, opt)
                keep_going = True
                for cb in callbacks:
                    if cb(state) is False:
                        keep_going = False
                preview = None
                if preview_every is not None and (done % preview_every == 0 or done == steps):
                    with torch.no_grad():
                        preview = param().detach().float().cpu().clamp(0, 1)
                metrics = {"loss": loss, **losses}
                on_progress(SynthesisProgress(task, done, steps, "steps", "", metrics, preview))
                if checkpoint is not None and done % checkpoint_every == 0:
                    _save_checkpoint(checkpoint, param, opt, done, history, run_id)
                if not keep_going:
                    stopped = True
                    break
        except KeyboardInterrupt:
            if checkpoint is not None and done > start:
                _save_checkpoint(checkpoint, param, opt, done, history, run_id)
            raise
    if checkpoint is not None:
        _save_checkpoint(checkpoint, param, opt, done, history, run_id)
    with torch.no_grad():
        final = param().detach().float().cpu().clamp(0, 1)
    return SynthesisResult(final, done, losses, history, stopped, opt.state_dict())


@dataclass(frozen=True)
class StepEstimate:
    """What `estimate` measured: seconds per step and the memory a step needs."""

    seconds_per_step: float
    saved_bytes: int  # tensors kept for the backward pass, the bulk of a step's memory
    state_bytes: int  # the image's parameters and the optimizer's state
    model_bytes: int  # the model's parameters and buffers

    @property
    def peak_bytes(self) -> int:
        return self.saved_bytes + self.state_bytes + self.model_bytes


def estimate(
    model: ConvModel,
    objective: Objective,
    param: nn.Module,
    *,
    transforms: nn.Module | None = None,
    optimizer: str = "adam",
    lr: float = 0.05,
    tile: int | None = None,
    tile_align: int = 1,
    tile_halo: int = 0,
    precision: Literal["fp32", "bf16"] = "fp32",
) -> StepEstimate:
    """Calibrate a run before it starts: two steps on a copy of `param` (the first warms up,
    the second is timed), counting the bytes autograd keeps for the backward pass. The real
    parameterization is not touched."""
    twin = copy.deepcopy(param)
    saved: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        if t.device.type != "meta":
            saved[t.data_ptr()] = max(saved.get(t.data_ptr(), 0), t.numel() * t.element_size())
        return t

    times: list[float] = []

    def clock(_: StepState) -> None:
        times.append(time.perf_counter())

    t0 = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), seeded(0):
        optimize(
            model,
            objective,
            twin,
            transforms=transforms,
            steps=2,
            optimizer=optimizer,
            lr=lr,
            tile=tile,
            tile_align=tile_align,
            tile_halo=tile_halo,
            precision=precision,
            callbacks=[clock],
        )
    per_step = times[1] - times[0] if len(times) == 2 else times[0] - t0
    state = sum(p.numel() * p.element_size() for p in twin.parameters())
    state *= {"adam": 3, "lbfgs": 100}.get(optimizer, 2)  # the values, their grads, moments
    model_bytes = sum(t.numel() * t.element_size() for t in model.module.state_dict().values())
    return StepEstimate(per_step, sum(saved.values()) // 2, state, model_bytes)


@dataclass
class Run:
    """Everything one call of `optimize` needs, so a recipe can plan a run and then either
    start it or `estimate` it (`--dry-run`)."""

    model: ConvModel
    objective: Objective
    param: nn.Module
    transforms: nn.Module | None = None
    steps: int = 512
    optimizer: str = "adam"
    lr: float = 0.05
    schedule: Schedule = "constant"
    callbacks: Sequence[Callback] = ()
    tile: int | None = None
    tile_align: int = 1
    tile_halo: int = 0
    precision: Literal["fp32", "bf16"] = "fp32"

    def start(self, **kwargs: Any) -> SynthesisResult:
        """`optimize` with this plan; `kwargs` are its other options (progress, previews,
        checkpoints, task, recipe)."""
        return optimize(
            self.model,
            self.objective,
            self.param,
            transforms=self.transforms,
            steps=self.steps,
            optimizer=self.optimizer,
            lr=self.lr,
            schedule=self.schedule,
            callbacks=self.callbacks,
            tile=self.tile,
            tile_align=self.tile_align,
            tile_halo=self.tile_halo,
            precision=self.precision,
            **kwargs,
        )

    def estimate(self) -> StepEstimate:
        return estimate(
            self.model,
            self.objective,
            self.param,
            transforms=self.transforms,
            optimizer=self.optimizer,
            lr=self.lr,
            tile=self.tile,
            tile_align=self.tile_align,
            tile_halo=self.tile_halo,
            precision=self.precision,
        )
