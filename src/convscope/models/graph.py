"""A model's forward as a `torch.fx` graph of leaf-module calls and tensor functions, which
can be run node by node. Model surgery (`convscope.models.fuse`) and occlusion's
region-of-influence engine both work on it. Models that fx cannot trace give None, and their
callers fall back to running the module as it is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, fx, nn

__all__ = ["ROUNDING_TOLERANCE", "LeafTracer", "Traced", "close", "fetch"]

ROUNDING_TOLERANCE = 1e-5
"""`close`'s default: max abs difference relative to the largest magnitude."""


class LeafTracer(fx.Tracer):
    """Every module without children (and every torch.nn module) stays one call."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return next(iter(m.children()), None) is None or super().is_leaf_module(
            m, module_qualified_name
        )


def close(got: Tensor, want: Tensor, tolerance: float = ROUNDING_TOLERANCE) -> bool:
    """Equal up to float rounding: same shape, max abs difference ≤ `tolerance` × the largest
    magnitude (a wrong computation is off by the size of the values themselves)."""
    if got.shape != want.shape:
        return False
    if got.numel() == 0:
        return True
    scale = float(want.abs().max())
    return float((got - want).abs().max()) <= tolerance * scale


def fetch(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass
class Traced:
    """A model's forward as an fx graph of leaf-module calls and tensor functions."""

    root: nn.Module
    nodes: list[fx.Node]
    modules: dict[str, nn.Module]

    @staticmethod
    def trace(module: nn.Module) -> Traced | None:
        try:
            graph = LeafTracer().trace(module)
        except Exception:  # data-dependent control flow, shape arithmetic, …: not traceable
            return None
        nodes = list(graph.nodes)
        if sum(n.op == "placeholder" for n in nodes) != 1 or nodes[0].op != "placeholder":
            return None
        return Traced(module, nodes, dict(module.named_modules()))

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
        return isinstance(got, Tensor) and isinstance(want, Tensor) and close(got, want)

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
            return fetch(self.root, str(node.target))
        if node.op == "output":
            return args[0]
        raise RuntimeError(f"cannot run fx node {node.op}")
