"""`tiny`: a two-layer net with hand-set weights whose outputs are known exactly; for tests
and quick tries.

`tiny` (in the registry as `--model tiny`):

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

import torch
from torch import nn

from convscope.models.base import ConvModel, Preprocess, WeightSource
from convscope.models.weights import ChosenWeights, choose_weights

__all__ = ["TinyNet", "tiny_model"]


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


HAND_SET = ChosenWeights(None, WeightSource("package", "convscope (hand-set)"), "hand-set weights")


def tiny_model(weights: str | None = None) -> ConvModel:
    """The hand-weighted `TinyNet` as a ConvModel (identity preprocessing, no resize).
    `weights`: None for the hand-set weights, "random", or a local state-dict file."""
    module = TinyNet()
    chosen = choose_weights(
        weights,
        default=lambda: HAND_SET,
        no_download="tiny has no download: its weights are set by hand in convscope.",
    )
    if chosen.random:
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.reset_parameters()
    chosen.load_into(module)
    return ConvModel(
        name="tiny",
        module=module,
        preprocess=Preprocess(resize=None, crop=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
        source=chosen.source,
        classes=("warm", "cool", "dark"),
        aliases={"features": "conv2", "act": "relu2"},
        default_layer="relu2",
    )
