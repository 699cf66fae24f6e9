"""Analytic receptive fields, traced through the real forward pass.

Every op the model runs is seen through a `TorchFunctionMode`, and each tensor carries the
receptive field of its (0, 0) unit per axis: `size`, `stride` (jump) and `start` (the input
coordinate of its first pixel; negative where padding reaches past the border). Convolutions and
pools compose it (kernel, stride, padding, dilation); `F.pad` shifts it (TF-SAME padding);
ops that keep the spatial size (ReLU, BN, residual `+`, channel `cat`) take the union of their
inputs' fields, which is exact for residual and multi-branch paths. Anything else that changes
the spatial size (global pooling, flatten, interpolation) has no spatial field (None).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

__all__ = ["RFTracker", "ReceptiveField"]


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of a layer's units, per axis (height, width), in input pixels."""

    size: tuple[int, int]
    stride: tuple[int, int]
    start: tuple[int, int]  # first input pixel of unit (0, 0); may be negative

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) of unit (y, x), bottom/right exclusive. May reach
        outside the image; callers pad."""
        top = self.start[0] + y * self.stride[0]
        left = self.start[1] + x * self.stride[1]
        return top, left, top + self.size[0], left + self.size[1]

    def center(self, y: int, x: int) -> tuple[float, float]:
        top, left, bottom, right = self.box(y, x)
        return (top + bottom - 1) / 2, (left + right - 1) / 2

    def __str__(self) -> str:
        def axis(v: tuple[int, int]) -> str:
            return str(v[0]) if v[0] == v[1] else f"{v[0]}×{v[1]}"

        return f"{axis(self.size)} px, stride {axis(self.stride)}, start {axis(self.start)}"


_Axis = tuple[int, int, int]  # (size, stride, start)
_RF2 = tuple[_Axis, _Axis]


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[-1])) if len(v) > 1 else (int(v[0]), int(v[0]))
    return int(v), int(v)


def _arg(args: Sequence[Any], kwargs: dict[str, Any], i: int, name: str, default: Any) -> Any:
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _window(rf: _RF2, k: Any, s: Any, p: Any, d: Any) -> _RF2:
    ks, ss, ds = _pair(k), _pair(s), _pair(d)
    ps = _pair(p)
    out = []
    for (size, jump, start), kk, st, pp, dd in zip(rf, ks, ss, ps, ds, strict=True):
        out.append((size + dd * (kk - 1) * jump, jump * st, start - pp * jump))
    return out[0], out[1]


def _union(rfs: list[_RF2]) -> _RF2 | None:
    if not rfs:
        return None
    axes = []
    for a in range(2):
        jumps = {r[a][1] for r in rfs}
        if len(jumps) > 1:
            return None
        start = min(r[a][2] for r in rfs)
        end = max(r[a][2] + r[a][0] for r in rfs)
        axes.append((end - start, jumps.pop(), start))
    return axes[0], axes[1]


def _tensors(obj: Any) -> list[Tensor]:
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for item in obj for t in _tensors(item)]
    return []


class RFTracker(TorchFunctionMode):
    """Within `with RFTracker() as rf:`, `rf.watch(x)` marks the input; afterwards
    `rf.field(t)` is the receptive field of any tensor the forward produced."""

    def __init__(self) -> None:
        super().__init__()
        self._rf: dict[int, _RF2] = {}
        self._keep: list[Tensor] = []  # keep tensors alive so ids stay unique

    def watch(self, x: Tensor) -> None:
        self._set(x, ((1, 1, 0), (1, 1, 0)))

    def _set(self, t: Tensor, rf: _RF2 | None) -> None:
        if rf is None:
            self._rf.pop(id(t), None)
            return
        self._rf[id(t)] = rf
        self._keep.append(t)

    def _get(self, t: Tensor) -> _RF2 | None:
        return self._rf.get(id(t))

    def field(self, t: Tensor) -> ReceptiveField | None:
        rf = self._get(t)
        if rf is None:
            return None
        (sh, jh, oh), (sw, jw, ow) = rf
        return ReceptiveField((sh, sw), (jh, jw), (oh, ow))

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        inputs = [t for t in _tensors(list(args)) + _tensors(list(kwargs.values()))]
        known = [(t, self._get(t)) for t in inputs if t.dim() >= 3 and self._get(t) is not None]
        if not known:
            return result
        outs = [t for t in _tensors(result) if t.dim() >= 3]
        src, src_rf = known[0]
        name = getattr(func, "__name__", "")
        new: _RF2 | None
        if name in ("conv2d", "convolution") and len(args) > 1:
            w = args[1]
            k = tuple(w.shape[-2:])
            stride = _arg(args, kwargs, 3, "stride", 1)
            pad = _arg(args, kwargs, 4, "padding", 0)
            dil = _arg(args, kwargs, 5, "dilation", 1)
            if isinstance(pad, str):
                dh, dw = _pair(dil)
                pad = (0, 0) if pad == "valid" else (dh * (k[0] - 1) // 2, dw * (k[1] - 1) // 2)
            assert src_rf is not None
            new = _window(src_rf, k, stride, pad, dil)
        elif name in ("max_pool2d", "max_pool2d_with_indices", "_max_pool2d", "avg_pool2d"):
            k = _arg(args, kwargs, 1, "kernel_size", 1)
            stride = _arg(args, kwargs, 2, "stride", None)
            stride = k if stride in (None, [], ()) else stride
            pad = _arg(args, kwargs, 3, "padding", 0)
            dil = 1 if name == "avg_pool2d" else _arg(args, kwargs, 4, "dilation", 1)
            assert src_rf is not None
            new = _window(src_rf, k, stride, pad, dil)
        elif name == "pad":
            pads = list(_arg(args, kwargs, 1, "pad", ()))
            pads += [0] * (4 - len(pads))
            left, top = int(pads[0]), int(pads[2])
            assert src_rf is not None
            (sh, jh, oh), (sw, jw, ow) = src_rf
            new = ((sh, jh, oh - top * jh), (sw, jw, ow - left * jw))
        else:
            same = [rf for t, rf in known if outs and t.shape[-2:] == outs[0].shape[-2:]]
            new = _union([r for r in same if r is not None]) if len(same) == len(known) else None
        for o in outs:
            if o is src and name not in ("pad",) and new is None:
                continue
            self._set(o, new)
        return result


def trace_input(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    return torch.zeros(shape, device=device, dtype=dtype)
