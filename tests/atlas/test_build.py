"""`build_atlas`: what the folder holds, links that work from file://, nothing computed twice,
a resumed run equal to an uninterrupted one, and bad arguments refused before any work."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from convscope.atlas import build as build_mod
from convscope.atlas.pages import ChannelInfo, ClassBar, LayerInfo, channel_html
from convscope.errors import UserInputError
from convscope.events import Progress
from convscope.testing import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

LINK = re.compile(r"""(?:src|href)=['"]([^'"]+)['"]""")


def _files(root: Path) -> dict[str, bytes]:
    """Every file of the site (the hidden bookkeeping left out), by relative path."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_the_site_has_a_page_and_pictures_for_every_channel(built: Path, kit: Any) -> None:
    manifest = json.loads((built / "atlas.json").read_text())
    assert manifest["layers"] == {"relu1": [0, 1, 2, 3], "conv2": [0, 1]}  # the first 8 or all
    for layer, channels in manifest["layers"].items():
        for c in channels:
            stem = built / "layers" / layer / f"c{c:04d}"
            assert stem.with_suffix(".html").is_file() and stem.with_suffix(".png").is_file()
            assert [p.name for p in sorted(stem.parent.glob(f"c{c:04d}-d*.png"))] == [
                f"c{c:04d}-d0.png",
                f"c{c:04d}-d1.png",
            ]
            assert len(list(stem.parent.glob(f"c{c:04d}-p*.png"))) == kit.small["k"]
    data = json.loads((built / "map" / "map.json").read_text())
    assert data["count"] == 12 and len(data["neighbors"]) == 12
    assert all(
        len(n) == kit.small["neighbors"] and i not in n for i, n in enumerate(data["neighbors"])
    )
    assert not list((built / ".partial").iterdir())  # checkpoints go once their job is done


def test_every_link_is_relative_and_leads_to_a_file(built: Path) -> None:
    pages = sorted(built.rglob("*.html"))
    assert len(pages) == 1 + 1 + 6  # index, map, one page per channel
    for page in pages:
        text = page.read_text()
        assert "http:" not in text and "https:" not in text  # no CDN, nothing online
        for link in LINK.findall(text):
            assert not link.startswith(("/", "file:")) and ":" not in link, (page, link)
            target = link.split("#")[0]
            if target:
                assert (page.parent / target).is_file(), (page, link)
    data = json.loads((built / "map" / "map.json").read_text())
    assert all((built / "map" / s).is_file() for s in data["sheets"])


def test_class_means_are_shown_when_the_dataset_has_labels(
    built: Path, tmp_path: Path, kit: Any
) -> None:
    page = (built / "layers" / "relu1" / "c0000.html").read_text()
    assert "Mean activation per class" in page and "class='bars'" in page
    assert ">a</span>" in page and ">b</span>" in page
    plain = kit.make_images(tmp_path / "plain", classes=False)
    kit.small_atlas(tmp_path / "atlas", plain, diverse=0, map_method="pca")
    page = (tmp_path / "atlas" / "layers" / "conv2" / "c0001.html").read_text()
    assert "has no labels" in page and "class='bars'" not in page
    assert not list((tmp_path / "atlas" / "layers" / "conv2").glob("*-d*.png"))  # diverse=0


def test_a_second_run_computes_nothing_and_changes_no_file(
    built: Path, images: Path, monkeypatch: pytest.MonkeyPatch, kit: Any
) -> None:
    before = _mtimes(built)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("recomputed")

    for name in ("visualize", "extract_features", "scan_top_activations", "build_map",
                 "channel_patches"):  # fmt: skip
        monkeypatch.setattr(build_mod, name, refuse)
    events: list[Progress] = []
    result = kit.small_atlas(built, images, on_progress=events.append)
    assert result.computed == 0 and result.reused == 2 * 2 + 1 + 2 + 1 + 6 + 6
    assert {e.task for e in events} == {"atlas"}
    assert events[-1].done == events[-1].total == result.reused
    assert _mtimes(built) == before


def test_a_changed_setting_recomputes_only_what_depends_on_it(
    built: Path, images: Path, tmp_path: Path, kit: Any
) -> None:
    out = tmp_path / "atlas"
    shutil.copytree(built, out)
    (out / "layers" / "relu1" / "c0002-d1.png").unlink()  # a lost output is made again
    assert kit.small_atlas(out, images).computed_kinds == ("diverse",)
    again = kit.small_atlas(out, images, steps=5)
    assert sorted(again.computed_kinds) == ["diverse"] * 6 + ["vis"] * 2
    scans = kit.small_atlas(out, images, steps=5, k=2).computed_kinds
    assert scans == ("topk",) * 2 + ("patches",) * 6
    # Back to 4 steps: the records of the first run remain, but the pictures are those of
    # 5 steps now, so their hashes differ and they are made again.
    assert sorted(kit.small_atlas(out, images, k=2).computed_kinds) == sorted(again.computed_kinds)


def test_an_interrupted_run_continues_to_the_same_site(
    built: Path, images: Path, tmp_path: Path, kit: Any
) -> None:
    """Ctrl-C in the middle of a synthesis (its loop keeps a checkpoint) and again in a later
    job; each new run continues, and the site ends byte for byte the uninterrupted one."""
    out = tmp_path / "atlas"
    seen: list[str] = []

    def stop_at(task: str, done: int) -> Any:
        def on_progress(event: Progress) -> None:
            seen.append(event.task)
            if event.task == task and event.done == done and seen.count(task) > 12:
                raise KeyboardInterrupt

        return on_progress

    with pytest.raises(KeyboardInterrupt):
        kit.small_atlas(out, images, on_progress=stop_at("visualize", 2))
    assert list((out / ".partial").glob("*.safetensors"))  # the loop's checkpoint
    seen.clear()
    with pytest.raises(KeyboardInterrupt):
        kit.small_atlas(out, images, on_progress=stop_at("atlas", 14))
    final = kit.small_atlas(out, images)
    assert 0 < final.computed < final.reused
    assert _files(out) == _files(built)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"layers": ["relu9"]}, "relu9"),
        ({"layers": ["fc"]}, "spatial layer"),
        ({"layers": ["act", "relu2"]}, "given twice"),
        ({"layers": []}, "at least one layer"),
        ({"channels": "0-9"}, "out of range"),
        ({"channels": [5]}, "out of range"),
        ({"channels": "x"}, "cannot read"),
        ({"steps": 0}, "steps must be"),
        ({"size": 8}, "size must be"),
        ({"diverse": 1}, "at least 2"),
        ({"diversity_weight": float("nan")}, "finite"),
        ({"diversity_weight": -1.0}, "at least 0"),
        ({"perplexity": float("inf")}, "finite"),
        ({"perplexity": 0.0}, "more than 0"),
        ({"k": 13}, "larger than the dataset"),
        ({"neighbors": 12}, "no room"),
        ({"map_points": 3}, "at least 4 images"),
        ({"map_method": "mds"}, "map_method"),
        ({"map_layer": "nope"}, "nope"),
        ({"limit": 0}, "limit must be"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(
    images: Path, tmp_path: Path, options: dict[str, Any], message: str, kit: Any
) -> None:
    out = tmp_path / "atlas"
    layers = options.pop("layers", kit.layers)
    with pytest.raises(UserInputError, match=message):
        build_mod.build_atlas(tiny_model(), images, layers, out=out, **{**kit.small, **options})
    assert not out.exists()


def test_folders_it_cannot_or_must_not_write_into(images: Path, tmp_path: Path, kit: Any) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    cases = {
        tmp_path / "missing" / "atlas": "does not exist",
        tmp_path / "file": "is not a folder",
        tmp_path / "other": "holds no atlas",
    }
    for out, message in cases.items():
        with pytest.raises(UserInputError, match=message):
            kit.small_atlas(out, images)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "other"]
    assert [p.name for p in (tmp_path / "other").iterdir()] == ["notes.txt"]
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(UserInputError, match="not writable"):
            kit.small_atlas(locked / "atlas", images)


def _chart(bars: list[ClassBar]) -> str:
    ch = ChannelInfo(0, "c0000.html", "c0000.png", classes=tuple(bars))
    layer = LayerInfo("conv", "conv", "layers/conv", 1, (1, 1, 4, 4), (ch,))
    return channel_html(model="m", dataset="d", layer=layer, position=0, k=1, images=1)


def test_class_bars_grow_from_zero_either_way() -> None:
    page = _chart([ClassBar("up", 3, 2.0), ClassBar("down", 2, -1.0), ClassBar("no", 0, math.nan)])
    assert "left:33.3%;width:66.7%" in page  # 0 sits a third of the way along
    assert "class='neg' style='left:0.0%;width:33.3%'" in page
    assert ">—<" in page and "strongest of" not in page  # no image of that class
    page = _chart([ClassBar(str(i), 1, float(i)) for i in range(30)])
    assert "The 20 strongest of 30 classes." in page
    assert ">29</span>" in page and ">9</span>" not in page
