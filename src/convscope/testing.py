"""Tiny models with hand-set weights whose outputs are known exactly. For tests and examples.

`tiny` (also in the registry as `--model tiny`):

    x (B, 3, H, W) ─ conv1 3→4, 3×3, pad 1 ─ relu1 ─ pool1 (max 2×2)
                   ─ conv2 4→2, 1×1 ─ relu2 ─ gap (mean) ─ fc 2→3 ─ logits

conv1's filters are box filters: channel 0 = mean of red, 1 = mean of green, 2 = mean of blue,
3 = minus mean of red (all 1/9 per tap on one input channel, bias 0). conv2 sums
(red + green) into channel 0 and (blue + minus-red) into channel 1. fc is
[[1, 0], [0, 1], [-1, -1]] with bias 0: classes "warm", "cool", "dark".

So on a constant image of colour (r, g, b), away from the border:
conv1 = (r, g, b, -r); relu1 = (r, g, b, 0); conv2 = (r + g, b); logits ≈ (r + g, b, -r - g - b)
(the zero padding lowers the border values; `gap` averages over those too).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from convscope.models.base import ConvModel, Preprocess, WeightSource
from convscope.models.registry import register

__all__ = [
    "TinyNet",
    "all_hooks",
    "assert_one_sentence",
    "run_cli",
    "same_state",
    "state_copy",
    "tiny_model",
]


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=True)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 2, 1, bias=True)
        self.relu2 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(2, 3)
        with torch.no_grad():
            w1 = torch.zeros(4, 3, 3, 3)
            w1[0, 0] = 1 / 9
            w1[1, 1] = 1 / 9
            w1[2, 2] = 1 / 9
            w1[3, 0] = -1 / 9
            self.conv1.weight.copy_(w1)
            self.conv1.bias.data.zero_()  # type: ignore[union-attr]
            w2 = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]).view(2, 4, 1, 1)
            self.conv2.weight.copy_(w2)
            self.conv2.bias.data.zero_()  # type: ignore[union-attr]
            self.fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, 3)
        x = self.pool1(self.relu1(self.conv1(x)))  # (B, 4, H/2, W/2)
        x = self.relu2(self.conv2(x))  # (B, 2, H/2, W/2)
        return self.fc(self.flatten(self.gap(x)))  # type: ignore[no-any-return]


def tiny_model(weights: str | None = None) -> ConvModel:
    """The hand-weighted `TinyNet` as a ConvModel (identity preprocessing, no resize)."""
    module = TinyNet()
    source = WeightSource("package", "convscope.testing (hand-set)")
    if weights == "random":
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.reset_parameters()
        source = WeightSource("random")
    elif weights is not None:
        from pathlib import Path

        from convscope.models.weights import load_state_dict_file

        module.load_state_dict(load_state_dict_file(Path(weights)))
        source = WeightSource("file", weights)
    return ConvModel(
        name="tiny",
        module=module,
        preprocess=Preprocess(resize=None, crop=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
        source=source,
        classes=("warm", "cool", "dark"),
        aliases={"features": "conv2", "act": "relu2"},
        default_layer="relu2",
    )


register(
    "tiny",
    description="a 2-layer toy net with hand-set weights (for tests and quick tries)",
    availability=lambda: None,
    source="built in (hand-set)",
)(tiny_model)


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


class _Capture(Protocol):
    """What `run_cli` needs of pytest's `capsys` fixture."""

    def readouterr(self) -> Any: ...


def run_cli(capture: _Capture, *args: str) -> tuple[int, str, str]:
    """Run `convscope ARGS...` in-process: (exit code, stdout, stderr), read through a pytest
    capture fixture (`capsys`)."""
    from convscope.cli import main

    code = main(list(args))
    cap = capture.readouterr()
    return code, str(cap.out), str(cap.err)


def assert_one_sentence(err: str) -> str:
    """Assert that `err` is the CLI's bad-input report: one line, "Error: ..." ending like a
    sentence, no traceback. Returns the line."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("Error: ") and lines[0].rstrip().endswith((".", "?", ")")), err
    return lines[0]
