"""The layer probe: the one place in convscope that registers hooks.

    with Probe(model, ["relu4_3", "features.28"]) as probe:
        model(x)
    probe.activations["relu4_3"]        # (B, C, H, W)

Layers are named by torch's dotted module names or by the model's aliases. Every hook is
removed when the `with` block ends, however it ends (an exception, a KeyboardInterrupt), and
no module attribute is left changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle

from convscope.errors import UnknownNameError, UserInputError
from convscope.models.base import ConvModel
from convscope.receptive import ReceptiveField, RFTracker

__all__ = [
    "RELU_RULES",
    "LayerInfo",
    "Probe",
    "ReceptiveField",
    "ReluRule",
    "capture",
    "layers",
    "receptive_fields",
    "resolve_layer",
]


ReluRule = Literal["guided", "deconv", "linear"]
RELU_RULES: tuple[str, ...] = ("guided", "deconv", "linear")


class _RuleReLU(torch.autograd.Function):
    """ReLU / ReLU6 forward with a replaced backward rule.

    guided (Springenberg et al. 2015): pass gradients that are positive, at positive inputs;
    deconv (Zeiler & Fergus 2014): pass positive gradients, whatever the input;
    linear: pass every gradient unchanged (used to measure receptive fields).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, hi: float | None, rule: str) -> Tensor:
        ctx.save_for_backward(x)
        ctx.hi = hi
        ctx.rule = rule
        return x.clamp(min=0) if hi is None else x.clamp(0, hi)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (x,) = ctx.saved_tensors
        if ctx.rule == "linear":
            return grad, None, None
        if ctx.rule == "deconv":
            return grad.clamp(min=0), None, None
        active = x > 0
        if ctx.hi is not None:
            active &= x < ctx.hi
        return grad.clamp(min=0) * active, None, None


def _relu_bound(
    name: str, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> tuple[bool, float | None]:
    """Is this call a ReLU-like op, and its upper bound (None for plain ReLU)?"""
    if name in ("relu", "relu_"):
        return True, None
    if name == "relu6":
        return True, 6.0
    if name in ("hardtanh", "hardtanh_"):
        lo = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
        hi = args[2] if len(args) > 2 else kwargs.get("max_val", 1.0)
        if float(lo) == 0.0:
            return True, float(hi)
    return False, None


class _ReluRuleMode(TorchFunctionMode):
    """Replaces the backward of every ReLU-like op: nn.ReLU, nn.ReLU6, in-place variants,
    functional `F.relu`/`torch.relu`/`Tensor.relu`, and `hardtanh(0, hi)`. In-place calls
    return a new tensor (modules use the returned value)."""

    def __init__(self, rule: str) -> None:
        super().__init__()
        self.rule = rule

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        is_relu, hi = _relu_bound(getattr(func, "__name__", ""), args, kwargs)
        if is_relu and args and isinstance(args[0], Tensor) and torch.is_grad_enabled():
            return _RuleReLU.apply(args[0], hi, self.rule)
        return func(*args, **kwargs)


class _StopForward(Exception):
    """Raised inside the forward once every requested layer was seen (`stop_early=True`)."""


def _first_tensor(output: Any) -> Tensor | None:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            t = _first_tensor(item)
            if t is not None:
                return t
    if isinstance(output, Mapping):
        for item in output.values():
            t = _first_tensor(item)
            if t is not None:
                return t
    return None


def _split(model: ConvModel | nn.Module) -> tuple[nn.Module, Mapping[str, str]]:
    if isinstance(model, ConvModel):
        return model.module, model.aliases
    if isinstance(model, nn.Module):
        return model, {}
    raise UserInputError(f"expected a ConvModel or nn.Module, got {type(model).__name__}.")


def resolve_layer(model: ConvModel | nn.Module, name: str) -> str:
    """An alias or dotted name → the dotted name; unknown names raise with the closest ones."""
    if isinstance(model, ConvModel):
        return model.resolve(name)
    module, _ = _split(model)
    names = [n for n, _ in module.named_modules() if n]
    if name in names:
        return name
    raise UnknownNameError("layer", name, names, hint="`convscope layers MODEL` lists them.")


class Probe:
    """Collect activations (and, with `grads=True`, their gradients) of named layers.

    Args:
        model: a `ConvModel` (aliases allowed) or any `nn.Module`.
        layers: dotted names or aliases. Results are keyed by the names as given.
        grads: also collect d(loss)/d(activation) when `backward()` runs inside the block.
        detach: store activations detached from the graph (set False to optimize through them).
        clone: protect captured values from later in-place ops in the model
            (`out += identity`, `ReLU(inplace=True)`): the model continues on a copy.
            "auto": copy nothing, but `run()` checks afterwards whether the model changed a
            captured value in place (its version counter moved); if so it runs the forward
            again with copies, and keeps copying from then on. Loops of thousands of steps
            use this, so that models without such ops pay for no copies.
        stop_early: abort the forward once every layer was captured; use `Probe.run`.
        relu_rule: replace the backward of every ReLU-like op while the probe is active:
            "guided" (guided backprop), "deconv", or "linear". This covers modules and
            functional calls alike, in any model run inside the block.

    A module called several times in one forward keeps its last output.
    """

    def __init__(
        self,
        model: ConvModel | nn.Module,
        layers: Iterable[str] | str,
        *,
        grads: bool = False,
        detach: bool = True,
        clone: bool | Literal["auto"] = True,
        stop_early: bool = False,
        relu_rule: ReluRule | None = None,
    ) -> None:
        self.module, _ = _split(model)
        if relu_rule is not None and relu_rule not in RELU_RULES:
            raise UserInputError(
                f"Unknown ReLU rule {relu_rule!r}; choose one of {', '.join(RELU_RULES)}."
            )
        self.relu_rule = relu_rule
        self._mode: _ReluRuleMode | None = None
        self.model = model
        names = [layers] if isinstance(layers, str) else list(layers)
        if not names and relu_rule is None:
            raise UserInputError("no layers were given to probe.")
        # Resolve everything before registering anything, so a bad name leaves no hook behind.
        self.targets: dict[str, str] = {n: resolve_layer(model, n) for n in names}
        if clone not in (True, False, "auto"):
            raise UserInputError(f"clone must be True, False or 'auto', got {clone!r}.")
        self.grads = grads
        self.detach = detach
        self.clone: bool | Literal["auto"] = clone
        self.stop_early = stop_early
        self.activations: dict[str, Tensor] = {}
        self.gradients: dict[str, Tensor] = {}
        self._handles: list[RemovableHandle] = []  # module hooks: one per hooked module
        # Tensor hooks for gradients: the latest per hooked module, replacing the previous
        # forward's, so a loop of many forwards inside one block keeps a bounded number.
        self._tensor_handles: dict[tuple[str, ...], RemovableHandle] = {}
        self._versions: dict[str, tuple[Tensor, int]] = {}  # clone="auto": value at capture
        self._active = False

    # ---- context manager --------------------------------------------------------------------
    def __enter__(self) -> Probe:
        if self._active:
            raise RuntimeError("this Probe is already active.")
        modules = dict(self.module.named_modules())
        by_module: dict[str, list[str]] = {}
        for given, dotted in self.targets.items():
            by_module.setdefault(dotted, []).append(given)
        try:
            for dotted, given_names in by_module.items():
                hook = self._make_hook(tuple(given_names))
                self._handles.append(modules[dotted].register_forward_hook(hook))
            if self.relu_rule is not None:
                self._mode = _ReluRuleMode(self.relu_rule)
                self._mode.__enter__()  # type: ignore[no-untyped-call]
        except BaseException:
            self._release()
            raise
        self._active = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release()

    def _release(self) -> None:
        try:
            while self._handles:
                self._handles.pop().remove()
            while self._tensor_handles:
                self._tensor_handles.popitem()[1].remove()
        finally:
            self._active = False
            mode, self._mode = self._mode, None
            if mode is not None:
                mode.__exit__(None, None, None)  # type: ignore[no-untyped-call]

    # ---- hooks ------------------------------------------------------------------------------
    def _make_hook(self, names: tuple[str, ...]) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            t = _first_tensor(output)
            if t is None:
                return None
            kept = t.detach() if self.detach else t
            replacement = None
            if self.clone is True:
                if output is t:
                    # The model continues on a copy, so its later in-place ops cannot touch
                    # what we keep, and `kept` stays the tensor gradients flow through.
                    replacement = t.clone()
                else:
                    kept = kept.clone()
            elif self.clone == "auto":
                for n in names:
                    self._versions[n] = (t, t._version)
            for n in names:
                self.activations[n] = kept
            if self.grads and t.requires_grad:
                old = self._tensor_handles.pop(names, None)
                if old is not None:
                    old.remove()
                self._tensor_handles[names] = t.register_hook(self._make_grad_hook(names))
            if self.stop_early and len(self.activations) == len(self.targets):
                raise _StopForward
            return replacement

        return hook

    def _make_grad_hook(self, names: tuple[str, ...]) -> Any:
        def grad_hook(grad: Tensor) -> None:
            for n in names:
                self.gradients[n] = grad.detach().clone()

        return grad_hook

    # ---- running ----------------------------------------------------------------------------
    def run(self, x: Tensor) -> Tensor | None:
        """Run the model on `x` inside this probe (entering it if needed). With `stop_early`,
        the forward stops after the last requested layer and None is returned."""
        if not self._active:
            with self:
                return self.run(x)
        out = self._forward(x)
        if self.clone == "auto" and self.changed_in_place():
            self.clone = True  # this model changes captured values in place: copy from now on
            out = self._forward(x)
        return out

    def _forward(self, x: Tensor) -> Tensor | None:
        self.activations.clear()
        self._versions.clear()
        try:
            out = self.module(x)
        except _StopForward:
            return None
        return _first_tensor(out)

    def changed_in_place(self) -> list[str]:
        """With clone="auto": the layers whose captured value the model has since changed in
        place (so `activations` no longer holds what the layer computed)."""
        return [n for n, (t, v) in self._versions.items() if t._version != v]

    def activation(self, name: str) -> Tensor:
        if name not in self.activations:
            raise UserInputError(
                f"layer {name!r} produced no activation; was the model run inside the probe?"
            )
        return self.activations[name]

    def gradient(self, name: str) -> Tensor:
        if name not in self.gradients:
            raise UserInputError(
                f"no gradient reached layer {name!r}; ask for grads=True and call backward() "
                "on a loss that depends on it inside the probe."
            )
        return self.gradients[name]


def capture(
    model: ConvModel | nn.Module,
    x: Tensor,
    layers: Iterable[str] | str,
    *,
    stop_early: bool = True,
) -> dict[str, Tensor]:
    """Activations of `layers` for input `x` (no grad), stopping the forward early."""
    probe = Probe(model, layers, stop_early=stop_early)
    with torch.inference_mode():
        probe.run(x)
    missing = [n for n in probe.targets if n not in probe.activations]
    if missing:
        raise UserInputError(f"layers {missing} were never called in the model's forward pass.")
    return dict(probe.activations)


@dataclass(frozen=True)
class LayerInfo:
    """One row of `layers(model)`."""

    name: str  # torch's dotted name
    alias: str | None
    type: str
    shape: tuple[int, ...] | None  # output shape for a (1, 3, size, size) input; None if unused
    params: int
    rf: ReceptiveField | None  # analytic receptive field; None where not spatial (e.g. fc)


def _trace(
    model: ConvModel | nn.Module, names: list[str], size: int
) -> tuple[dict[str, Tensor], dict[str, ReceptiveField | None]]:
    module, _ = _split(model)
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
    x = torch.zeros(1, 3, size, size, device=device, dtype=dtype)
    probe = Probe(model, names, detach=False)
    try:
        with torch.inference_mode(), RFTracker() as tracker:
            tracker.watch(x)
            probe.run(x)
            fields = {n: tracker.field(a) for n, a in probe.activations.items()}
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(f"the model cannot run on a {size}×{size} input: {first}") from None
    return probe.activations, fields


def receptive_fields(
    model: ConvModel | nn.Module, layers: Iterable[str] | str, size: int = 224
) -> dict[str, ReceptiveField | None]:
    """Analytic receptive fields of `layers` (names or aliases), traced at input `size`."""
    names = [layers] if isinstance(layers, str) else list(layers)
    _, fields = _trace(model, names, size)
    return {n: fields.get(n) for n in names}


def layers(
    model: ConvModel | nn.Module, size: int = 224, *, leaves_only: bool = False
) -> list[LayerInfo]:
    """Every submodule with its alias, type, output shape and receptive field at `size`."""
    if size < 1:
        raise UserInputError(f"size must be positive, got {size}.")
    module, aliases = _split(model)
    reverse: dict[str, str] = {}
    for alias, dotted in aliases.items():
        reverse.setdefault(dotted, alias)
    named = [(n, m) for n, m in module.named_modules() if n]
    if leaves_only:
        named = [(n, m) for n, m in named if not list(m.children())]
    acts, fields = _trace(model, [n for n, _ in named], size)
    rows = []
    for n, m in named:
        act = acts.get(n)
        rows.append(
            LayerInfo(
                name=n,
                alias=reverse.get(n),
                type=type(m).__name__,
                shape=tuple(act.shape) if act is not None else None,
                params=sum(p.numel() for p in m.parameters(recurse=False)),
                rf=fields.get(n),
            )
        )
    return rows
