"""A deliberately slow `tiny` for the subprocess tests, given as
`--model tests/cli/slow_model.py:slow_tiny`: the same hand-set weights and numbers, but every
forward first sleeps CONVSCOPE_TEST_SLEEP seconds (default 0.05), so that a run over `digits`
lasts long enough to be interrupted."""

from __future__ import annotations

import os
import time
from dataclasses import replace

import torch

from convscope.models import ConvModel
from convscope.models.tiny import TinyNet, tiny_model


class SlowTinyNet(TinyNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, 3)
        time.sleep(float(os.environ.get("CONVSCOPE_TEST_SLEEP", "0.05")))
        return super().forward(x)


def slow_tiny() -> ConvModel:
    fast = tiny_model()
    module = SlowTinyNet()
    module.load_state_dict(fast.module.state_dict())
    return replace(fast, name="slow_tiny", module=module)
