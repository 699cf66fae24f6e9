"""Occlusion's region-of-influence engine (see `convscope.attribute.occlusion`): a patch changes
a layer only inside the receptive-field image of the patch, so each masked image recomputes
just that crop of every early layer, reading the halo from the clean image's cached maps, and
pastes the crops into whole maps where crops stop paying. The plan is checked against whole
forwards before it is used.

Under a reduced `precision` (occlusion's fast mode) only the whole maps between the pasted
prefix and the pooled classifier run in it: the prefix (crops, and the clean maps they read
their halo from) and the classifier `tail` stay float32."""

from __future__ import annotations

import contextlib
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from convscope.attribute.targets import ClassTarget
from convscope.errors import UserInputError
from convscope.models.base import ConvModel
from convscope.models.graph import Traced, close
from convscope.receptive import RFTracker

__all__ = ["PLAN_TOLERANCE", "IncrementalRunner", "Plan", "Runner"]

PLAN_TOLERANCE = 1e-5
"""Incremental vs whole activations, relative to their largest value: a plan (and any twin of
a module) is used only within this."""


class Runner:
    """Computes the probability drops of a batch of masks (indices into the positions)."""

    def drops(self, idx: list[int]) -> list[float]:
        raise NotImplementedError


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
    traced: Traced, node: fx.Node, values: dict[fx.Node, Any], known: set[fx.Node]
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
    if not close(twin, out):
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
    if not close(twin, out):
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


def _in_place(traced: Traced, node: fx.Node) -> Callable[[Tensor], Tensor] | None:
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
class Plan:
    """Which nodes run on crops, and each mask's crop at each of them."""

    traced: Traced
    steps: list[_Step]
    rest: list[fx.Node]  # run whole, batched (the only part fast mode runs in reduced precision)
    live: list[fx.Node]  # prefix values the rest reads
    twins: dict[fx.Node, Callable[[Tensor], Tensor]]  # rest convs run as one padded conv
    tail: frozenset[fx.Node]  # the pooled classifier: float32 in fast mode
    in_place: dict[fx.Node, Callable[[Tensor], Tensor]]  # activations run in place
    positions: Sequence[tuple[int, int]]
    window: int
    fmt: torch.memory_format

    @staticmethod
    def build(
        traced: Traced,
        clean: Tensor,
        positions: Sequence[tuple[int, int]],
        grid: tuple[int, int],
        window: int,
        switch_fraction: float,
        fmt: torch.memory_format,
    ) -> Plan:
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
        plan = Plan._assemble(traced, values, keep, positions, window, fmt, twins)
        if len(keep) > 1 and not plan._agrees(values, clean, grid):
            plan = Plan._assemble(traced, values, keep[:1], positions, window, fmt, twins)
        return plan

    @staticmethod
    def _assemble(
        traced: Traced,
        values: dict[fx.Node, Any],
        steps: list[_Step],
        positions: Sequence[tuple[int, int]],
        window: int,
        fmt: torch.memory_format,
        twins: dict[fx.Node, Callable[[Tensor], Tensor]],
    ) -> Plan:
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
        return Plan(traced, steps, rest, live, twins, tail, in_place, positions, window, fmt)

    def _agrees(self, values: dict[fx.Node, Any], clean: Tensor, grid: tuple[int, int]) -> bool:
        """Do the maps the plan pastes together equal whole forwards, on the corner and centre
        windows?"""
        n = len(self.positions)
        rows, cols = grid
        check = sorted({0, cols - 1, n - cols, n - 1, (rows // 2) * cols + cols // 2})
        full = Plan._assemble(
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
            a = IncrementalRunner(self, None, clean, patch, cls[0], nothing, values)
            b = IncrementalRunner(full, None, clean, patch, cls[0], nothing, values)
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
                    if not close(got[node], env[node]):
                        return False
        except Exception:
            return False
        return True


def _clean_values(
    traced: Traced,
    clean: Tensor,
    precision: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    tail: frozenset[fx.Node] = frozenset(),
    prefix: frozenset[fx.Node] = frozenset(),
) -> dict[fx.Node, Any]:
    """Every node's value on the clean image (copies, so later in-place ops cannot touch
    them), under `precision` except for the `prefix` (leading nodes) and the `tail` (trailing
    nodes), which run in float32 (as `IncrementalRunner.drops` runs them)."""
    env: dict[fx.Node, Any] = {traced.nodes[0]: clean}
    kept: dict[fx.Node, Any] = {traced.nodes[0]: clean}

    def keep(node: fx.Node, v: Any) -> None:
        env[node] = v
        kept[node] = v.clone() if isinstance(v, Tensor) else v

    nodes = traced.nodes[1:]
    for node in nodes:
        if node in prefix:
            keep(node, traced.run(node, env))
    with precision():
        for node in nodes:
            if node not in prefix and node not in tail:
                keep(node, traced.run(node, env))
    for node in nodes:
        if node in tail:
            keep(node, _run_float32(traced, node, env))
    return kept


def _run_float32(traced: Traced, node: fx.Node, env: dict[fx.Node, Any]) -> Any:
    """Run `node` outside autocast, its reduced-precision inputs cast to float32."""

    def wide(v: Any) -> Any:
        if isinstance(v, Tensor) and v.dtype in (torch.bfloat16, torch.float16):
            return v.float()
        return v

    inputs = {n: wide(env[n]) for n in node.all_input_nodes}
    device = next((v.device.type for v in inputs.values() if isinstance(v, Tensor)), "cpu")
    with torch.autocast(device, enabled=False):
        return traced.run(node, inputs)


def _classifier_tail(traced: Traced, values: dict[fx.Node, Any]) -> frozenset[fx.Node]:
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


class IncrementalRunner(Runner):
    """Runs a plan for one image: crops through the prefix, whole maps after it."""

    def __init__(
        self,
        plan: Plan,
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
            prefix = frozenset(s.node for s in plan.steps)
            values = _clean_values(traced, clean, precision, plan.tail, prefix)
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
        # The prefix in float32: crops are a small part of the work, and on EfficientNet-Lite0
        # running them in bfloat16 cost about half of fast mode's error.
        env = self.live(idx)
        with self.precision():
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
