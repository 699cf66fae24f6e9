"""`smallnet`: a small convnet trained on handwritten digits, shipped with convscope.

One network serves two lecture figures: its `embed` features cluster by class under t-SNE, and
its second conv layer (20 filters over 16 channels, 7×7) has the filter slices that are drawn
one input channel at a time.

    x (B, 3, 28, 28) ─ conv1 3→16, 7×7, pad 3 ─ relu1 ─ pool1 (max 2)       → 16×14×14
                     ─ conv2 16→20, 7×7, pad 3 ─ relu2 ─ pool2 (max 2)      → 20×7×7
                     ─ conv3 20→20, 7×7, pad 3 ─ relu3 ─ pool3 (global avg) → 20×1×1
                     ─ flatten ─ fc1 20→32 ─ relu4 (alias `embed`) ─ fc2 32→10 ─ logits

Grayscale digits are replicated to RGB, as every convscope model takes RGB. The input is the
image resized (bilinear) to 28×28 and mapped to [-1, 1] (`PREPROCESS`); training uses the same
`Preprocess`, so inference matches it.

The default weights are `weights/smallnet_digits.safetensors` next to this file, made by
`convscope train-small` (see `weights/README.md`). A checkpoint's metadata may name its classes
(`train-small --dataset fashion-mnist` records Fashion-MNIST's), which the loader then uses.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from torch import Tensor, nn

from convscope.errors import WeightsUnavailableError
from convscope.models.availability import (
    SMALLNET_SHIPPED,
    shipped_smallnet_checkpoint,
    smallnet_availability,
)
from convscope.models.base import ConvModel, Preprocess, WeightSource
from convscope.models.weights import ChosenWeights, choose_weights, load_state_dict_file

__all__ = [
    "ALIASES",
    "DIGIT_CLASSES",
    "EMBED_DIM",
    "FORMAT",
    "PREPROCESS",
    "SmallNet",
    "checkpoint_metadata",
    "load_smallnet",
    "shipped_checkpoint",
    "smallnet_availability",
    "smallnet_model",
]

FORMAT = "convscope-smallnet-1"  # written into checkpoints' metadata
EMBED_DIM = 32
DIGIT_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
PREPROCESS = Preprocess(
    resize=28,
    crop=28,
    interpolation="bilinear",
    scale=1.0,
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
)
ALIASES: dict[str, str] = {"embed": "relu4", "logits": "fc2"}
SHIPPED_NAME = SMALLNET_SHIPPED


class SmallNet(nn.Module):
    """(B, 3, 28, 28) → (B, `num_classes`) logits. Every activation is a named module (no
    functional or in-place ops), so each can be hooked. Other input sizes work too (the last
    pool is global), but the shipped weights were trained at 28×28."""

    def __init__(self, num_classes: int = 10, embed_dim: int = EMBED_DIM) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=7, padding=3)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 20, kernel_size=7, padding=3)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(20, 20, kernel_size=7, padding=3)
        self.relu3 = nn.ReLU()
        self.pool3 = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(20, embed_dim)
        self.relu4 = nn.ReLU()
        self.fc2 = nn.Linear(embed_dim, num_classes)
        for m in self.modules():  # He init: trains in a few epochs where torch's default stalls
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))  # (B, 16, 14, 14)
        x = self.pool2(self.relu2(self.conv2(x)))  # (B, 20, 7, 7)
        x = self.flatten(self.pool3(self.relu3(self.conv3(x))))  # (B, 20)
        return self.fc2(self.relu4(self.fc1(x)))  # type: ignore[no-any-return]


def shipped_checkpoint() -> Path:
    """The path of the shipped digits checkpoint (package data)."""
    return shipped_smallnet_checkpoint()


def checkpoint_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata of a safetensors checkpoint ({} for torch files or none)."""
    from safetensors import safe_open

    from convscope.models.weights import is_safetensors_file

    p = Path(path).expanduser()
    if not p.is_file() or not is_safetensors_file(p):
        return {}
    try:
        with safe_open(str(p), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # unreadable: `load_state_dict_file` reports it properly
        return {}


def _classes_from(meta: dict[str, str], num_classes: int) -> tuple[str, ...]:
    raw = meta.get("classes")
    if raw:
        try:
            names = json.loads(raw)
        except ValueError:
            names = None
        if (
            isinstance(names, list)
            and len(names) == num_classes
            and all(isinstance(n, str) for n in names)
        ):
            return tuple(names)
    if num_classes == len(DIGIT_CLASSES):
        return DIGIT_CLASSES
    return tuple(str(i) for i in range(num_classes))


def smallnet_model(
    module: SmallNet,
    source: WeightSource,
    classes: tuple[str, ...] = DIGIT_CLASSES,
) -> ConvModel:
    """Wrap a `SmallNet` as a ConvModel with smallnet's preprocessing and aliases."""
    return ConvModel(
        name="smallnet",
        module=module,
        preprocess=PREPROCESS,
        source=source,
        classes=classes,
        aliases=dict(ALIASES),
        default_layer="relu3",
    )


def load_smallnet(weights: str | None = None) -> ConvModel:
    """SmallNet. `weights`: None for the shipped digits checkpoint, "random" for a random init
    (from torch's global RNG), or a local state-dict file (e.g. from `convscope train-small`;
    class names are read from its metadata when it records them). "DEFAULT" is refused."""

    def shipped() -> ChosenWeights:
        path = shipped_checkpoint()
        if not path.is_file():
            raise WeightsUnavailableError(
                f"The shipped smallnet checkpoint {str(path)!r} is missing; make it with "
                f"`{smallnet_availability()}`."
            )
        source = WeightSource("package", f"convscope (trained on digits; {SHIPPED_NAME})")
        return ChosenWeights(
            load_state_dict_file(path), source, "shipped smallnet checkpoint", path
        )

    chosen = choose_weights(
        weights,
        default=shipped,
        no_download="smallnet has no download: its default weights ship with convscope, so "
        "leave the weights option out to use them, or train your own with "
        "`convscope train-small`.",
    )
    if chosen.state is None:  # random
        return smallnet_model(SmallNet(), chosen.source)
    state, meta = chosen.state, checkpoint_metadata(chosen.path) if chosen.path else {}
    fc2 = state.get("fc2.weight")
    num_classes = int(fc2.shape[0]) if fc2 is not None and fc2.dim() == 2 else 10
    module = SmallNet(num_classes=num_classes)
    chosen.load_into(module)
    return smallnet_model(module, chosen.source, _classes_from(meta, num_classes))
