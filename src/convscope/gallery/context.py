"""What every demo section gets: where to write, which device, a model cache, progress."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from convscope.data.images import load_image, save_png
from convscope.data.samples import load_sample
from convscope.errors import WeightsUnavailableError
from convscope.events import ProgressCallback, no_progress
from convscope.models import ConvModel, load_model
from convscope.render.html import Figure

__all__ = ["CLASSIC_IMAGES", "DemoContext", "classic_or_sample"]

CLASSIC_IMAGES = "CONVSCOPE_CLASSIC_IMAGES"
"""The environment variable naming a folder with neural-style's classic images
(`styles/starry_night.jpg`, `content/golden_gate.jpg`, …); default `../shared/data`."""


def classic_or_sample(relative: str, sample: str) -> tuple[Tensor, str]:
    """(3, H, W) and its name: the classic image `relative` (e.g. "styles/the_scream.jpg")
    when that folder has it, else the bundled sample `sample`, so the demo runs anywhere."""
    root = Path(os.environ.get(CLASSIC_IMAGES, "../shared/data"))
    path = root / relative
    if path.is_file():
        return load_image(path), path.stem.replace("_", " ")
    return load_sample(sample), sample


@dataclass
class DemoContext:
    """A section writes its PNGs into `out` with `save`, loads models with `model` (each is
    loaded once per demo), and reports long steps to `on_progress` (the CLI shows them as the
    current section's bar under the demo's overall one)."""

    out: Path
    device: torch.device | str = "cpu"
    on_progress: ProgressCallback = no_progress
    models: dict[str, ConvModel] = field(default_factory=dict)

    def model(self, name: str) -> ConvModel:
        if name not in self.models:
            self.models[name] = load_model(name, device=self.device)
        return self.models[name]

    def try_model(self, name: str, skipped: list[str]) -> ConvModel | None:
        """The model, or None with a note in `skipped` when its weights are not installed."""
        try:
            return self.model(name)
        except WeightsUnavailableError as exc:
            skipped.append(f"{name} skipped: {exc}")
            return None

    def save(self, name: str, image: Any) -> Figure:
        """Write `image` (a tensor or Pillow image) as `out/name` and return its figure."""
        save_png(image, self.out / name)
        return Figure(name)
