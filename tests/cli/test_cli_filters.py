"""`convscope filters` and `convscope activations`: PNGs of the right size, one-sentence errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from convscope.cli.testing import assert_one_sentence, run_cli
from convscope.data import load_image
from convscope.inspect import activation_grid, activation_maps, compare_first_layers, filter_grid
from convscope.render import grid_size
from convscope.testing import tiny_model


@pytest.fixture
def png(tmp_path: Path) -> Path:
    path = tmp_path / "warm.png"
    Image.new("RGB", (16, 12), (200, 120, 30)).save(path)
    return path


def opened(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG"
        return im.copy()


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in ("filters", "activations"):
        code, out, _ = run_cli(capsys, cmd, "--help")
        assert code == 0 and "Usage" in out


def test_filters_writes_a_png(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "filters.png"
    code, _, err = run_cli(capsys, "filters", "--model", "tiny", "--out", str(target))
    assert code == 0, err
    assert opened(target).size == filter_grid(tiny_model()).size
    code, _, _ = run_cli(
        capsys, "filters", "-m", "tiny", "--layer", "conv2", "-o", str(target), "-q"
    )
    assert code == 0
    assert opened(target).size == filter_grid(tiny_model(), "conv2").size
    code, _, _ = run_cli(
        capsys, "filters", "-m", "tiny", "--max-filters", "1", "--out", str(target), "-q"
    )
    assert code == 0
    assert opened(target).size == filter_grid(tiny_model(), max_filters=1).size


def test_filters_of_several_models(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "both.png"
    code, _, err = run_cli(capsys, "filters", "-m", "tiny", "-m", "tiny", "--out", str(target))
    assert code == 0, err
    assert opened(target).size == compare_first_layers([tiny_model(), tiny_model()]).size


def test_activations_grid(capsys: pytest.CaptureFixture[str], png: Path, tmp_path: Path) -> None:
    target = tmp_path / "act.png"
    code, _, err = run_cli(
        capsys, "activations", str(png), "--model", "tiny", "--layer", "conv1", "--out",
        str(target), "--channels", "0,2-3", "--scaling", "shared",
    )  # fmt: skip
    assert code == 0, err
    act = activation_maps(tiny_model(), load_image(png), "conv1")  # (4, 12, 16)
    expected = activation_grid(act, channels=[0, 2, 3], scaling="shared", title="t")
    assert opened(target).size == expected.size
    # Default layer (relu2) and channels, from a sample name.
    code, _, err = run_cli(capsys, "activations", "cat", "-m", "tiny", "-o", str(target), "-q")
    assert code == 0, err
    assert opened(target).width >= 360


def test_activations_overlay(capsys: pytest.CaptureFixture[str], png: Path, tmp_path: Path) -> None:
    target = tmp_path / "overlay.png"
    # input and overlay side by side: the 16×12 image grows 14× to a 224-px tile; title 28 px
    width, height = grid_size(2, ncol=2, tile=224, pad=4, label_height=22)
    for extra in (["--overlay"], ["--overlay-channel", "1"], ["--overlay", "--channels", "0"]):
        code, _, err = run_cli(
            capsys, "activations", str(png), "-m", "tiny", "-l", "conv1", "-o", str(target),
            *extra,
        )  # fmt: skip
        assert code == 0, err
        assert opened(target).size == (width, height + 28)
        target.unlink()


def _inputs(d: Path) -> Path:
    img = d / "in.png"
    Image.new("RGB", (16, 12), (10, 20, 30)).save(img)
    return img


BAD: dict[str, Callable[[Path], list[str]]] = {
    "unknown layer": lambda d: ["activations", str(_inputs(d)), "-m", "tiny", "-l", "conv9"],
    "channel out of range": lambda d: [
        "activations", str(_inputs(d)), "-m", "tiny", "-l", "conv1", "--channels", "2-5",
    ],
    "malformed channels": lambda d: [
        "activations", str(_inputs(d)), "-m", "tiny", "-l", "conv1", "--channels", "1-x",
    ],
    "backwards channels": lambda d: [
        "activations", str(_inputs(d)), "-m", "tiny", "-l", "conv1", "--channels", "3-1",
    ],
    "overlay channel out of range": lambda d: [
        "activations", str(_inputs(d)), "-m", "tiny", "-l", "conv1", "--overlay-channel", "4",
    ],
    "bad scaling": lambda d: [
        "activations", str(_inputs(d)), "-m", "tiny", "-l", "conv1", "--scaling", "log",
    ],
    "not a map": lambda d: ["activations", str(_inputs(d)), "-m", "tiny", "-l", "fc"],
    "missing image": lambda d: ["activations", str(d / "nope.png"), "-m", "tiny", "-l", "conv1"],
    "unknown sample": lambda d: ["activations", "cofee", "-m", "tiny", "-l", "conv1"],
    "non-conv layer for filters": lambda d: ["filters", "-m", "tiny", "--layer", "relu1"],
    "unknown layer for filters": lambda d: ["filters", "-m", "tiny", "--layer", "conv7"],
    "--layer with several models": lambda d: [
        "filters", "-m", "tiny", "-m", "tiny", "--layer", "conv1",
    ],
    "--max-filters 0": lambda d: ["filters", "-m", "tiny", "--max-filters", "0"],
    "unknown model": lambda d: ["filters", "-m", "tiny", "-m", "resnet5O"],
    "no offline weights": lambda d: ["filters", "-m", "tiny", "-m", "resnet18"],
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_with_one_sentence(
    case: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "picture.png"
    code, _, err = run_cli(capsys, *BAD[case](inputs), "--out", str(target))
    assert code == 2, err
    assert_one_sentence(err)
    assert list(out_dir.iterdir()) == [], "an output or temporary file was left"


def test_missing_out_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "filters", "-m", "tiny", "-o", str(tmp_path / "no" / "f.png"))
    assert code == 2
    assert_one_sentence(err)


# ---- real weights -----------------------------------------------------------------------------


@pytest.mark.weights
def test_vgg16_filters_and_activations(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "vgg.png"
    code, _, err = run_cli(capsys, "filters", "-m", "vgg16", "-o", str(target), "-q")
    assert code == 0, err
    body = grid_size(64, ncol=8, tile=57, pad=4, label_height=16)
    assert opened(target).size == (body[0], body[1] + 22 + 28)
    code, _, err = run_cli(
        capsys, "activations", "cat", "-m", "vgg16", "-l", "relu1_1", "--channels", "600",
        "-o", str(tmp_path / "act.png"),
    )  # fmt: skip
    assert code == 2
    assert err.strip() == "Error: channel 600 is out of range 0..63 for layer relu1_1."
    assert not (tmp_path / "act.png").exists()
