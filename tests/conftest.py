"""Shared fixtures: hand-weighted tiny models, a private weights cache, helpers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from convscope.models import ConvModel
from convscope.testing import tiny_model

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Converted weights go to a per-session cache, never the user's home; torch's hub cache
    too, so no test sees a checkpoint downloaded outside the test run."""
    cache = tmp_path_factory.mktemp("convscope-cache")
    old = {k: os.environ.get(k) for k in ("CONVSCOPE_CACHE", "TORCH_HOME")}
    os.environ["CONVSCOPE_CACHE"] = str(cache)
    os.environ["TORCH_HOME"] = str(tmp_path_factory.mktemp("torch-home"))
    yield cache
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for the test: tiny forwards avoid OpenMP hand-offs, which stall on a
    shared 2-core machine, and give the same bits every run. Modules opt in with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny() -> ConvModel:
    return tiny_model()
