"""Step rules of the classic papers as `torch.optim` optimizers, so the one loop can use them:
each moves the image along its gradient scaled per image (the leading dimension):

- `normalized`: g / ||g||₂ (CS231n's class visualization, `lr` 25 in model units);
- `mean-abs`: g / mean|g| (google/deepdream, `lr` 1.5);
- `sign`: sign(g) (projected gradient descent, Madry et al.; `lr` is the step in pixels).

They *minimize*, like every torch optimizer: the loop hands them minus the objective.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import Tensor

from convscope.errors import UnknownNameError, UserInputError

__all__ = ["OPTIMIZERS", "ScaledStep", "make_optimizer"]

Rule = Literal["normalized", "mean-abs", "sign"]
OPTIMIZERS: tuple[str, ...] = ("adam", "sgd", "lbfgs", "normalized", "mean-abs", "sign")


class ScaledStep(torch.optim.Optimizer):
    """p ← p − lr · rule(g), the rule applied to each image's gradient on its own."""

    def __init__(self, params: Iterable[Tensor], *, lr: float, rule: Rule) -> None:
        if rule not in ("normalized", "mean-abs", "sign"):
            raise UserInputError(f"unknown step rule {rule!r}.")
        super().__init__(params, {"lr": lr, "rule": rule})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["rule"] == "sign":
                    d = g.sign()
                else:
                    flat = g.reshape(g.shape[0], -1) if g.dim() > 1 else g.reshape(1, -1)
                    if group["rule"] == "normalized":
                        scale = flat.norm(dim=1)
                    else:
                        scale = flat.abs().mean(dim=1)
                    shape = (-1,) + (1,) * (g.dim() - 1) if g.dim() > 1 else (1,)
                    d = g / scale.clamp(min=1e-12).view(shape)
                p.add_(d, alpha=-group["lr"])
        return loss


def make_optimizer(name: str, params: Iterable[Tensor], lr: float) -> torch.optim.Optimizer:
    """An optimizer by name (see `OPTIMIZERS`) with learning rate `lr`."""
    if not (isinstance(lr, (int, float)) and lr > 0 and lr == lr and lr != float("inf")):
        raise UserInputError(f"the learning rate must be a positive number, got {lr!r}.")
    params = list(params)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "lbfgs":
        return torch.optim.LBFGS(params, lr=lr, max_iter=1, history_size=100)
    if name in ("normalized", "mean-abs", "sign"):
        return ScaledStep(params, lr=lr, rule=name)  # type: ignore[arg-type]
    raise UnknownNameError("optimizer", name, OPTIMIZERS)
