"""Every recipe leaves the model as it was: no hook, the same state dict, the same
`requires_grad` flags, no `.grad`, after a run and after a run stopped by an exception."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from convscope.events import Progress
from convscope.models import ConvModel
from convscope.synthesize.recipes.adversarial import adversarial
from convscope.synthesize.recipes.dream import dream
from convscope.synthesize.recipes.invert import invert
from convscope.synthesize.recipes.visualize import visualize
from convscope.testing import all_hooks, same_state, state_copy

pytestmark = pytest.mark.usefixtures("one_thread")

IMAGE = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(0))

Recipe = Callable[[ConvModel, Callable[[Progress], None]], object]
RECIPES: dict[str, Recipe] = {
    "visualize": lambda m, p: visualize(
        m, layer="relu1", channel=0, steps=6, size=16, on_progress=p
    ),
    "adversarial": lambda m, p: adversarial(m, IMAGE, target="cool", steps=6, on_progress=p),
    "invert": lambda m, p: invert(m, IMAGE, ["relu1", "act"], steps=6, on_progress=p),
    "dream": lambda m, p: dream(m, IMAGE, "act", octaves=2, steps=3, size=24, on_progress=p),
}


def _check(model: ConvModel, before: dict[str, torch.Tensor], flags: list[bool]) -> None:
    assert all_hooks(model.module) == 0
    assert same_state(before, state_copy(model.module))
    assert [p.requires_grad for p in model.module.parameters()] == flags
    assert all(p.grad is None for p in model.module.parameters())


@pytest.mark.parametrize("name", list(RECIPES))
def test_the_model_is_unchanged_after_a_run_and_after_an_error(tiny: ConvModel, name: str) -> None:
    before = state_copy(tiny.module)
    flags = [p.requires_grad for p in tiny.module.parameters()]
    RECIPES[name](tiny, lambda _e: None)
    _check(tiny, before, flags)

    def boom(event: Progress) -> None:
        if event.done >= 2:
            raise RuntimeError("stopped mid-run")

    with pytest.raises(RuntimeError, match="stopped mid-run"):
        RECIPES[name](tiny, boom)
    _check(tiny, before, flags)
