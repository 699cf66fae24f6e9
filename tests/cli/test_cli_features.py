"""`convscope features`, `neighbors` and `embed`: happy paths, Ctrl-C and --resume, and one
sentence with exit code 2 (and no output file) for every bad input."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from convscope.cli.testing import assert_one_sentence, run_cli
from convscope.events import Progress
from convscope.inspect import features as feat_lib
from convscope.inspect.features import load_features, partial_path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Two classes of coloured 12×10 images, and one unreadable file."""
    root = tmp_path / "imgs"
    colors = {"warm": [(250, 40, 0), (200, 90, 10), (255, 0, 60)], "cool": [(0, 40, 250)] * 3}
    for cls, cs in colors.items():
        (root / cls).mkdir(parents=True)
        for i, c in enumerate(cs):
            Image.new("RGB", (12, 10), (c[0], c[1] + i, c[2])).save(root / cls / f"{i}.png")
    (root / "cool" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


@pytest.fixture
def index(tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / "feats.safetensors"
    code, stdout, err = run_cli(
        capsys, "features", str(folder), "--model", "tiny", "--layer", "conv1", "--out", str(out)
    )
    assert code == 0, err
    assert "6 images × 4 features" in stdout and "(1 skipped)" in stdout
    return out


def test_features_writes_file_with_provenance(index: Path) -> None:
    ff = load_features(index)
    assert len(ff) == 6 and ff.skipped == 1 and ff.layer == "conv1" and ff.model == "tiny"
    assert ff.classes == ["cool", "warm"]


def test_features_builtin_dataset_with_smallnet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "d.safetensors"
    code, stdout, err = run_cli(
        capsys, "features", "digits", "--model", "smallnet", "--limit", "40", "--out", str(out),
        "--batch-size", "16", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "40 images × 32 features of smallnet embed (0 skipped)" in stdout
    assert load_features(out).provenance["dataset"] == "digits"


def test_features_ctrl_c_then_resume(
    tmp_path: Path,
    folder: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = feat_lib.extract_features

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        bar = kwargs["on_progress"]
        calls: list[int] = []

        def press_ctrl_c(event: Progress) -> None:
            bar(event)
            calls.append(event.done)
            if len(calls) == 3:  # the start, then two batches
                raise KeyboardInterrupt

        kwargs["on_progress"] = press_ctrl_c
        return real(*args, **kwargs)

    out = tmp_path / "f.safetensors"
    args = ["features", str(folder), "-m", "tiny", "-l", "act", "-o", str(out), "--batch-size", "2"]
    monkeypatch.setattr(feat_lib, "extract_features", interrupted)
    code, _, err = run_cli(capsys, *args)
    assert code == 130
    assert "--resume" in err and "4 images are saved" in err
    assert not out.exists() and partial_path(out).is_dir()
    monkeypatch.setattr(feat_lib, "extract_features", real)
    code, _, err = run_cli(capsys, *args)  # without --resume: refused, nothing lost
    assert code == 2 and "--resume" in err
    assert_one_sentence(err)
    code, stdout, err = run_cli(capsys, *args, "--resume")
    assert code == 0, err
    assert "6 images" in stdout and not partial_path(out).exists()


def test_features_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "f.safetensors"
    for args in (
        ["features", str(empty), "-m", "tiny", "-o", str(out)],
        ["features", str(tmp_path / "nope"), "-m", "tiny", "-o", str(out)],
        ["features", "digits", "-m", "tiny", "-l", "nolayer", "-o", str(out)],
        ["features", "digits", "-m", "tiny", "-o", str(tmp_path / "f.npz")],
        ["features", "digits", "-m", "tiny", "-o", str(tmp_path / "no" / "f.safetensors")],
    ):
        code, _, err = run_cli(capsys, *args)
        assert code == 2, err
        assert_one_sentence(err)
    assert not out.exists() and not partial_path(out).exists()


def test_neighbors_figure(
    tmp_path: Path, index: Path, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fig = tmp_path / "nb.png"
    query = str(folder / "warm" / "0.png")
    code, stdout, err = run_cli(
        capsys, "neighbors", "@0", query, "--index", str(index), "--k", "3", "--pixels",
        "--out", str(fig), "--metric", "cosine",
    )  # fmt: skip
    assert code == 0, err
    assert "2 queries × 3 neighbours" in stdout
    with Image.open(fig) as im:
        assert im.width > 4 * 112 and im.height > 4 * 112  # 4 rows (2 queries × 2 spaces)
    code, _, err = run_cli(
        capsys, "neighbors", "@5", "--index", str(index), "--k", "5", "-o", str(fig)
    )
    assert code == 0, err


def test_neighbors_bad_inputs(
    tmp_path: Path, index: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fig = tmp_path / "nb.png"
    other = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(3)}, str(other))
    notes = tmp_path / "notes.safetensors"
    notes.write_text("hello")
    cases = {
        "larger than the index": ["@0", "--index", str(index), "--k", "7"],
        "does not exist": ["@0", "--index", str(tmp_path / "missing.safetensors")],
        "not a convscope feature file": ["@0", "--index", str(other)],
        "not a safetensors": ["@0", "--index", str(notes)],
        "out of range": ["@6", "--index", str(index)],
        "@N": ["@x", "--index", str(index)],
        "neither a file nor a sample": ["no-such-image", "--index", str(index)],
        "no room": ["@0", "--index", str(index), "--k", "6"],
    }
    for needle, args in cases.items():
        k = [] if "--k" in args else ["--k", "2"]
        code, _, err = run_cli(capsys, "neighbors", *args, *k, "--out", str(fig))
        assert code == 2, (needle, err)
        assert_one_sentence(err)
        assert needle in err, (needle, err)
        assert not fig.exists()


def test_embed_pca_png_and_html(
    tmp_path: Path, index: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png, page = tmp_path / "map.png", tmp_path / "map.html"
    code, stdout, err = run_cli(
        capsys, "embed", str(index), "--method", "pca", "--out", str(png), "--html", str(page),
        "--size", "300", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "6 images, pca" in stdout
    assert png.is_file() and page.is_file()
    text = page.read_text()
    assert not re.search(r"https?://", text)
    m = re.search(r'id="convscope-map-data">(.*?)</script>', text)
    assert m is not None and json.loads(m.group(1))["n"] == 6
    code, _, err = run_cli(
        capsys, "embed", str(index), "--method", "tsne", "--grid", "--max-points", "5",
        "--out", str(png), "--size", "200", "--quiet",
    )  # fmt: skip
    assert code == 0, err


def test_embed_bad_inputs(
    tmp_path: Path, index: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    png = tmp_path / "map.png"
    other = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(3)}, str(other))
    for args in (
        [str(index), "--method", "isomap"],
        [str(tmp_path / "missing.safetensors")],
        [str(other)],
        [str(index), "--html", str(tmp_path / "map.txt")],
    ):
        code, _, err = run_cli(capsys, "embed", *args, "--out", str(png))
        assert code == 2, err
        assert_one_sentence(err)
    monkeypatch.setitem(sys.modules, "umap", None)  # as if umap-learn were not installed
    code, _, err = run_cli(capsys, "embed", str(index), "--method", "umap", "--out", str(png))
    assert code == 2
    assert_one_sentence(err)
    assert "pip install" in err and "umap-learn" in err
    assert not png.exists()


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in ("features", "neighbors", "embed"):
        code, out, _ = run_cli(capsys, cmd, "--help")
        assert code == 0 and "Usage" in out
