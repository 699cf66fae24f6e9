"""The demo's fast-style section: the four styles on the bundled photos and the blend grid,
or a note when the shipped network is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import convscope.gallery.stylenet as section_module
from convscope.gallery.context import DemoContext
from convscope.stylenet import TransformerNet, save_net


def test_the_section_shows_four_styles_and_a_blend_grid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    path = save_net(
        TransformerNet(norm="conditional", styles=4), tmp_path / "four.safetensors",
        styles=["a", "b", "c", "d"], training={"steps": 7},
    )  # fmt: skip
    monkeypatch.setattr(section_module, "net_path", lambda name: path)
    monkeypatch.setattr(section_module, "card_path", lambda name: tmp_path / "four.md")
    monkeypatch.setattr(section_module, "SIZE", 64)
    monkeypatch.setattr(section_module, "GRID_SIZE", 56)
    out = tmp_path / "gallery"
    out.mkdir()
    section = section_module.section(DemoContext(out))
    assert [f.src for f in section.figures] == [
        "stylenet_four_styles.png", "stylenet_blend_grid.png"
    ]  # fmt: skip
    assert "trained for 7 steps" in section.figures[0].caption
    with Image.open(out / "stylenet_blend_grid.png") as im:
        assert im.size[0] > 5 * 56 and im.size[1] > 5 * 56


def test_without_the_shipped_network_the_section_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(section_module, "net_path", lambda name: tmp_path / "absent.safetensors")
    section = section_module.section(DemoContext(tmp_path))
    assert section.figures == [] and "not installed" in " ".join(section.notes)
