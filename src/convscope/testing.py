"""Helpers for convscope's tests and for users testing their own models: hook counting and
state-dict snapshots. (The CLI's test helpers live in `convscope.cli.testing`.)

`TinyNet` and `tiny_model` (see `convscope.models.tiny`) are re-exported here, where tests
and examples have always found them.
"""

from __future__ import annotations

import torch
from torch import nn

from convscope.models.tiny import TinyNet, tiny_model

__all__ = [
    "TinyNet",
    "all_hooks",
    "require_package",
    "same_state",
    "state_copy",
    "tiny_model",
]


def all_hooks(module: nn.Module) -> int:
    """How many module hooks of any kind are registered anywhere in `module`."""
    n = 0
    for m in module.modules():
        for attr in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
            "_state_dict_hooks",
            "_load_state_dict_pre_hooks",
        ):
            n += len(getattr(m, attr, {}))
    return n


def state_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def require_package(name: str) -> None:
    """Skip the calling test when package `name` is not installed, unless the environment says
    the test extras were installed (`CONVSCOPE_REQUIRE_EXTRAS=1`, set by `make test`): then a
    missing package is a failure, so a broken install cannot pass as skipped tests. Finds the
    package without importing it."""
    import importlib.util
    import os

    import pytest

    try:
        found = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        found = False
    if found:
        return
    if os.environ.get("CONVSCOPE_REQUIRE_EXTRAS") == "1":
        pytest.fail(f"package {name!r} is not installed, but `make test` installs it")
    pytest.skip(f"package {name!r} is not installed")
