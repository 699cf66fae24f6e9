"""Bundled sample images: all load offline, as (3, H, W) floats in [0, 1]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convscope.data.samples import (
    SAMPLES,
    is_sample,
    load_image_or_sample,
    load_sample,
    sample_info,
    sample_names,
)
from convscope.errors import UnknownNameError, UserInputError

REQUIRED = [
    "cat",
    "chelsea",
    "coffee",
    "rocket",
    "astronaut",
    "china",
    "flower",
    "hopper",
    "camera",
    "coins",
    "hubble",
    "immunohistochemistry",
    "retina",
    "brick",
    "grass",
    "gravel",
    "colorwheel",
    "horse",
    "moon",
    "clock",
    "motorcycle",
]


def test_required_names_present() -> None:
    assert set(REQUIRED) <= set(sample_names())
    assert sample_names() == sorted(SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_loads(name: str) -> None:
    x = load_sample(name)
    assert x.dim() == 3 and x.shape[0] == 3 and x.shape[1] >= 100 and x.shape[2] >= 100
    assert x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert float(x.max()) > float(x.min())
    info = sample_info(name)
    assert info.source and info.licence


def test_known_shapes_and_aliases() -> None:
    cat = load_sample("cat")
    assert cat.shape == (3, 300, 451)
    assert torch.equal(cat, load_sample("chelsea"))
    assert load_sample("hopper").shape == (3, 600, 512)
    assert load_sample("china").shape == (3, 427, 640)
    assert load_sample("motorcycle").shape == (3, 500, 741)


def test_gray_and_bool_become_rgb() -> None:
    cam = load_sample("camera")
    assert torch.equal(cam[0], cam[1]) and torch.equal(cam[1], cam[2])
    horse = load_sample("horse")
    assert set(torch.unique(horse).tolist()) == {0.0, 1.0}


def test_fresh_tensor_each_time() -> None:
    a = load_sample("coins")
    a.zero_()
    assert float(load_sample("coins").max()) > 0


def test_names_case_insensitive() -> None:
    assert is_sample("Coffee") and is_sample(" cat ")
    assert not is_sample("nope")
    assert load_sample("COINS").shape == load_sample("coins").shape


def test_unknown_sample() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'coffee'") as ei:
        load_sample("cofee")
    assert ei.value.kind == "sample"
    with pytest.raises(UnknownNameError):
        sample_info("zzz")


def test_load_image_or_sample_sample() -> None:
    x, label = load_image_or_sample("Rocket")
    assert label == "rocket" and x.shape == (3, 427, 640)


def test_existing_path_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.full((5, 6, 3), 255, dtype=np.uint8)).save("coffee", format="PNG")
    x, label = load_image_or_sample("coffee")
    assert x.shape == (3, 5, 6) and label == "coffee"
    y, _ = load_image_or_sample(tmp_path / "coffee")
    assert torch.equal(x, y)


def test_neither_file_nor_sample() -> None:
    with pytest.raises(UserInputError, match="neither a file nor a sample name") as ei:
        load_image_or_sample("not-a-thing")
    msg = str(ei.value)
    assert "samples are:" in msg and "coffee" in msg and msg.endswith(".")


@pytest.mark.parametrize("spec", ["missing/x.png", "x.jpg", "photo.JPEG", "./thing"])
def test_path_like_missing(spec: str) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        load_image_or_sample(spec)


def test_path_object_missing(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        load_image_or_sample(tmp_path / "cat")


def test_max_pixels_passed_through(tmp_path: Path) -> None:
    Image.new("RGB", (10, 10)).save(tmp_path / "a.png")
    with pytest.raises(UserInputError, match="--max-pixels"):
        load_image_or_sample(str(tmp_path / "a.png"), max_pixels=50)


def test_fallback_loaders_match(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = {n: load_sample(n) for n in ("hopper", "flower")}
    monkeypatch.setattr("convscope.data.samples._package_file", lambda *a: None)
    for name, x in fast.items():
        assert torch.equal(load_sample(name), x)
