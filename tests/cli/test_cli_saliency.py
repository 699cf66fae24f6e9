"""`convscope saliency`: panels, raw maps, and one sentence (exit 2, no output) per bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from convscope.attribute.gradcam import NO_LAYER_MESSAGE
from convscope.cli.testing import assert_one_sentence, run_cli


@pytest.fixture
def png(tmp_path: Path) -> Path:
    path = tmp_path / "warm.png"
    img = Image.new("RGB", (16, 12), (200, 60, 20))
    img.paste((20, 40, 220), (10, 2, 15, 9))  # a blue patch
    img.save(path)
    return path


@pytest.fixture
def no_default_layer(tmp_path: Path) -> str:
    path = tmp_path / "nodefault.py"
    path.write_text(
        "from dataclasses import replace\n"
        "from convscope.testing import tiny_model\n\n"
        "def make():\n"
        "    return replace(tiny_model(), default_layer=None)\n"
    )
    return f"{path}:make"


def test_panel_and_raw_maps_on_tiny(
    capsys: pytest.CaptureFixture[str], png: Path, tmp_path: Path
) -> None:
    out, raw = tmp_path / "sal.png", tmp_path / "sal.safetensors"
    code, _, err = run_cli(
        capsys,
        "saliency", str(png), "--model", "tiny",
        "--method", "gradient,guided,gradcam,smoothgrad,occlusion",
        "--window", "4", "--stride", "2", "--samples", "2",
        "--out", str(out), "--raw", str(raw), "-q",
    )  # fmt: skip
    assert code == 0, err
    with Image.open(out) as im:
        assert im.mode == "RGB" and im.width > im.height  # 6 columns, 2 rows
    tensors = load_file(raw)
    assert set(tensors) == {
        "image.0", "gradient.0", "guided.0", "gradcam.0", "smoothgrad.0", "occlusion.0"
    }  # fmt: skip
    assert tensors["image.0"].shape == (3, 12, 16)
    for name in ("gradient", "guided", "gradcam", "smoothgrad", "occlusion"):
        m = tensors[f"{name}.0"]
        assert m.shape == (12, 16) and (m >= 0).all()
    with safe_open(str(raw), "pt") as f:
        meta = f.metadata()
    assert meta["model"] == "tiny"
    assert json.loads(meta["targets"]) == ["warm (0)"]
    assert json.loads(meta["target_indices"]) == [0]
    assert json.loads(meta["images"]) == [str(png)]
    assert meta["methods"] == "gradient,guided,gradcam,smoothgrad,occlusion"


def test_several_images_make_one_png(
    capsys: pytest.CaptureFixture[str], png: Path, tmp_path: Path
) -> None:
    one, two = tmp_path / "one.png", tmp_path / "two.png"
    assert run_cli(capsys, "saliency", str(png), "-m", "tiny", "-o", str(one), "-q")[0] == 0
    code, _, err = run_cli(
        capsys, "saliency", str(png), str(png), "-m", "tiny", "--target", "cool", "-o", str(two)
    )
    assert code == 0 and f"Wrote {two}" in err
    with Image.open(one) as a, Image.open(two) as b:
        assert b.width == a.width and b.height > 2 * a.height - 20
    assert list(tmp_path.glob("two_*")) == []


def test_guided_backprop_of_a_neuron(
    capsys: pytest.CaptureFixture[str], png: Path, tmp_path: Path
) -> None:
    out, raw = tmp_path / "n.png", tmp_path / "n.safetensors"
    code, _, err = run_cli(
        capsys, "saliency", str(png), "-m", "tiny", "--method", "guided",
        "--layer", "relu1", "--channel", "0", "--position", "2,3",
        "-o", str(out), "--raw", str(raw), "-q",
    )  # fmt: skip
    assert code == 0, err
    guided = load_file(raw)["guided.0"]
    want = torch.zeros(12, 16)
    want[1:4, 2:5] = 1 / 9  # relu1 ch 0 = 3x3 mean of red around (2, 3)
    assert torch.allclose(guided, want, atol=1e-6)
    with safe_open(str(raw), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["neuron"]) == {"layer": "relu1", "channel": 0, "position": [2, 3]}
    assert json.loads(meta["targets"]) == ["relu1 ch 0 @ 2,3"]


BAD = [
    (["--target", "wram"], "did you mean 'warm'"),
    (["--target", "7"], "class index 7 is out of range 0..2"),
    (["--method", "occlusion", "--window", "99"], "--window 99 is larger than the 16x12 image"),
    (["--method", "occlusion", "--stride", "0"], "--stride must be at least 1"),
    (["--method", "occlusion", "--fill", "pink"], "--fill must be one of gray, mean, blur"),
    (["--method", "smoothgrad", "--samples", "0"], "--samples must be at least 1"),
    (["--layer", "relu9", "--channel", "0"], "Unknown layer 'relu9'"),
    (["--layer", "relu1", "--channel", "4"], "channel 4 is out of range 0..3 for layer relu1"),
    (["--layer", "relu1", "--channel", "0", "--position", "99,0"], "outside layer relu1"),
    (["--layer", "relu1", "--channel", "0", "--position", "2"], "--position must be two"),
    (["--layer", "relu1", "--method", "gradient"], "--layer without --channel"),
    (["--method", "gradient,gradiant"], "Unknown method 'gradiant'; did you mean 'gradient'"),
    (["--method", ","], "--method needs at least one method"),
    (["--channel", "0"], "--channel needs --layer"),
]


@pytest.mark.parametrize(("extra", "message"), BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_input_is_one_sentence_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], png: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    out, raw = tmp_path / "bad.png", tmp_path / "bad.safetensors"
    code, _, err = run_cli(
        capsys, "saliency", str(png), "-m", "tiny", "-o", str(out), "--raw", str(raw), *extra
    )
    assert code == 2
    assert message in assert_one_sentence(err)
    assert not out.exists() and not raw.exists()
    assert list(tmp_path.iterdir()) == [png]  # no temporary files either


def test_gradcam_without_a_default_layer(
    capsys: pytest.CaptureFixture[str], png: Path, tmp_path: Path, no_default_layer: str
) -> None:
    out = tmp_path / "bad.png"
    code, _, err = run_cli(
        capsys, "saliency", str(png), "-m", no_default_layer, "--method", "gradcam", "-o", str(out)
    )
    assert code == 2 and assert_one_sentence(err) == f"Error: {NO_LAYER_MESSAGE}"
    assert not out.exists()
    code, _, err = run_cli(
        capsys, "saliency", str(png), "-m", no_default_layer, "--method", "gradcam",
        "--layer", "relu2", "-o", str(out), "-q",
    )  # fmt: skip
    assert code == 0, err


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "saliency", "--help")
    assert code == 0 and "--method" in out and "occlusion" in out


def _central_share(m: torch.Tensor) -> float:
    """The share of a map's mass inside the central square of half the image's area."""
    h, w = m.shape
    sh, sw = round(h / math.sqrt(2)), round(w / math.sqrt(2))
    top, left = (h - sh) // 2, (w - sw) // 2
    return float(m[top : top + sh, left : left + sw].sum() / m.sum())


@pytest.mark.weights
def test_espresso_maps_are_on_the_cup(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out, raw = tmp_path / "coffee.png", tmp_path / "coffee.safetensors"
    code, _, err = run_cli(
        capsys, "saliency", "coffee", "--model", "efficientnet_lite0", "--target", "espresso",
        "--method", "gradient,guided,gradcam", "-o", str(out), "--raw", str(raw), "-q",
    )  # fmt: skip
    assert code == 0, err
    maps = load_file(raw)
    assert maps["image.0"].shape == (3, 224, 224)
    for name in ("gradient", "guided", "gradcam"):
        assert maps[f"{name}.0"].shape == (224, 224)
        assert _central_share(maps[f"{name}.0"]) > 0.5, name  # more mass inside than outside
    assert _central_share(maps["gradcam.0"]) > 0.65


@pytest.mark.weights
def test_class_names_match_as_the_help_says(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--help: names match by a whole name, a synonym or a unique prefix; a misspelling gets
    suggestions (and is not silently replaced by a guess)."""
    from convscope.cli.root import command

    saliency = command().commands["saliency"]  # type: ignore[attr-defined]
    target = next(p for p in saliency.params if "--target" in p.opts)
    assert "a misspelling gets suggestions" in target.help
    out = tmp_path / "t.png"
    base = ["saliency", "cat", "-m", "efficientnet_lite0", "--method", "gradient", "-q"]
    for name in ("Tabby", "tiger ca"):  # any case; a unique prefix
        code, _, err = run_cli(capsys, *base, "--target", name, "-o", str(out))
        assert code == 0, err
    code, _, err = run_cli(capsys, *base, "--target", "espreso", "-o", str(tmp_path / "x.png"))
    assert code == 2 and "did you mean 'espresso'" in assert_one_sentence(err)
    assert not (tmp_path / "x.png").exists()
