"""Helpers for convscope's tests and for users testing their own models: hook counting,
state-dict snapshots, and a headless Chromium for browser tests. (The CLI's test helpers live
in `convscope.cli.testing`.)

`TinyNet` and `tiny_model` (see `convscope.models.tiny`) are re-exported here, where tests
and examples have always found them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convscope.models.tiny import TinyNet, tiny_model

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "TinyNet",
    "all_hooks",
    "artifact_dir",
    "chromium",
    "require_chromium",
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


CHROMIUM = "/usr/bin/chromium"
"""Debian's Chromium (`apt-get install -y chromium`), which Playwright drives: `playwright
install` cannot download a browser on an offline machine."""

CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def require_chromium() -> None:
    """Skip the calling test when Playwright or Debian's Chromium is missing: with a clear
    message where there is no apt-get to install Chromium with; a failure instead where there
    is and `CONVSCOPE_REQUIRE_EXTRAS=1` (set by `make test`, which installs it)."""
    import shutil

    import pytest

    require_package("playwright")
    if Path(CHROMIUM).exists():
        return
    if shutil.which("apt-get") is None:
        pytest.skip(f"{CHROMIUM} is missing and this machine has no apt-get to install it with")
    if os.environ.get("CONVSCOPE_REQUIRE_EXTRAS") == "1":
        pytest.fail(
            f"{CHROMIUM} is missing, but `make test` installs it (apt-get install chromium)"
        )
    pytest.skip(f"{CHROMIUM} is missing: browser tests need `apt-get install -y chromium`")


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (a Playwright `Browser`), closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()


def artifact_dir(name: str) -> Path:
    """A folder for a test's artifacts (screenshots): `$CONVSCOPE_ARTIFACTS/name`, by default
    `test-artifacts/name` under the working directory. Kept after the run, for people to see."""
    root = Path(os.environ.get("CONVSCOPE_ARTIFACTS", "test-artifacts"))
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    return path
