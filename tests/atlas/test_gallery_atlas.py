"""The demo's atlas section (on the tiny model here, for speed) builds the small atlas beside
the gallery and links it from index.html."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from convscope.gallery import DemoContext, build, choose_sections
from convscope.gallery import atlas as section

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_demo_links_its_atlas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in [("MODEL", "tiny"), ("LAYERS", ("relu1", "conv2")), ("CHANNELS", (0, 1)),
                        ("SIZE", 16), ("STEPS", 2), ("CROPS_PER_PHOTO", 2)]:  # fmt: skip
        monkeypatch.setattr(section, name, value)
    page, _ = build(DemoContext(out=tmp_path), choose_sections("atlas"))
    text = Path(page).read_text()
    links = re.findall(r"href='([^']+)'", text)
    assert "atlas/index.html" in links and "atlas/map.html" in links
    assert all((tmp_path / link).is_file() for link in links if not link.startswith("#"))
    assert (tmp_path / "atlas_preview.png").is_file()
    channel = (tmp_path / "atlas" / "layers" / "conv2" / "c0001.html").read_text()
    assert "Mean activation per class" in channel and ">coffee</span>" in channel
