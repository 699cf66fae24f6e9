"""The demo's sections and its classic images, found or replaced by bundled samples."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from convscope.data.images import save_png
from convscope.data.samples import load_sample
from convscope.gallery import SECTIONS, choose_sections
from convscope.gallery.context import CLASSIC_IMAGES, classic_or_sample


def test_without_the_classic_images_the_demo_uses_a_bundled_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CLASSIC_IMAGES, str(tmp_path / "absent"))
    image, name = classic_or_sample("styles/starry_night.jpg", "brick")
    assert name == "brick" and torch.equal(image, load_sample("brick"))


def test_the_classic_images_are_used_when_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "styles").mkdir()
    save_png(torch.full((3, 8, 12), 0.5), tmp_path / "styles" / "starry_night.png")
    monkeypatch.setenv(CLASSIC_IMAGES, str(tmp_path))
    image, name = classic_or_sample("styles/starry_night.png", "brick")
    assert name == "starry night" and tuple(image.shape) == (3, 8, 12)


def test_texture_and_style_come_after_synthesis() -> None:
    names = [s.name for s in SECTIONS]
    assert names.index("synthesis") < names.index("texture") < names.index("style")
    assert [s.name for s in choose_sections("style,texture")] == ["texture", "style"]
