"""Golden regression cases: one fixed-seed run per preset and recipe at 64 px on smallnet (a
small real trained network that ships with convscope), each compared with a reference image
in `tests/synthesize/golden/`. A case passes at PSNR ≥ 35 dB, so float differences between
CPUs pass and a changed algorithm fails.

Regenerate the references (after a deliberate change of an algorithm, and look at them):

    .venv/bin/python tests/synthesize/golden_cases.py

Each case runs on one torch thread, as the test does.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from convscope.models import ConvModel, load_model

GOLDEN = Path(__file__).resolve().parent / "golden"
MIN_PSNR = 35.0
SIZE = 64


def _smallnet() -> ConvModel:
    return load_model("smallnet")


def _visualize(preset: str, steps: int) -> Callable[[], Tensor]:
    def run() -> Tensor:
        from convscope.synthesize.recipes.visualize import visualize

        return visualize(_smallnet(), target="3", preset=preset, steps=steps, size=SIZE).images

    return run


def _adversarial() -> Tensor:
    from convscope.data.datasets import load_dataset
    from convscope.synthesize.recipes.adversarial import adversarial

    digit = load_dataset("digits")[0].image  # a 0
    result = adversarial(_smallnet(), digit, target="7", eps=8 / 255, steps=20)
    return result.image[None]


def _invert() -> Tensor:
    from convscope.data.samples import load_sample
    from convscope.synthesize.recipes.invert import invert

    result = invert(_smallnet(), load_sample("coffee"), ["relu1", "relu2"], steps=30)
    return torch.stack([layer.image for layer in result.layers])


def _dream() -> Tensor:
    from convscope.data.samples import load_sample
    from convscope.synthesize.recipes.dream import dream

    result = dream(_smallnet(), load_sample("coffee"), "relu2", octaves=2, steps=5, size=SIZE)
    return result.image[None] if result.image.dim() == 3 else result.image


CASES: dict[str, Callable[[], Tensor]] = {
    "visualize-simonyan": _visualize("simonyan", 20),
    "visualize-yosinski": _visualize("yosinski", 20),
    "visualize-lucid": _visualize("lucid", 20),
    "adversarial": _adversarial,
    "invert": _invert,
    "dream": _dream,
}
"""Case name → a function returning the (B, 3, H, W) image(s) in [0, 1] of that run."""


def psnr(a: Tensor, b: Tensor) -> float:
    mse = float((a.double() - b.double()).pow(2).mean())
    return float("inf") if mse == 0 else 10.0 * float(torch.log10(torch.tensor(1.0 / mse)))


def render(name: str) -> Tensor:
    """The case's images side by side as one (3, H, W·B) image, quantized to 8 bits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        images = CASES[name]().detach().float().cpu().clamp(0, 1)  # (B, 3, H, W)
    finally:
        torch.set_num_threads(before)
    row = torch.cat(list(images), dim=-1)
    return (row * 255).round() / 255


def reference_path(name: str) -> Path:
    return GOLDEN / f"{name}.png"


def main(names: list[str]) -> None:
    from convscope.data.images import save_png

    GOLDEN.mkdir(exist_ok=True)
    for name in names or list(CASES):
        save_png(render(name), reference_path(name))
        print(f"wrote {reference_path(name)}")


if __name__ == "__main__":
    main(sys.argv[1:])
