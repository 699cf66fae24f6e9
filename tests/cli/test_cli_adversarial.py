"""`convscope adversarial`: the 8-bit image (classified again, it is the target), the panel,
the report as text and JSON, `convscope reproduce` making the same bytes, --dry-run, Ctrl-C,
and bad input refused in one sentence with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convscope.cli.testing import assert_one_sentence, run_cli
from convscope.data.images import load_image, png_text, save_png
from convscope.testing import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    """A 16×16 PNG tiny calls "warm" by a hair over "cool"."""
    g = torch.Generator().manual_seed(0)
    base = torch.tensor([0.25, 0.25, 0.49]).view(3, 1, 1).expand(3, 16, 16)
    image = (base + 0.02 * torch.randn(3, 16, 16, generator=g)).clamp(0, 1)
    path = tmp_path / "in.png"
    save_png(image, path)
    assert tiny_model().classify(load_image(path))[0][0].name == "warm"
    return path


def _args(picture: Path, out: Path, *more: str) -> list[str]:
    return ["adversarial", str(picture), "-m", "tiny", "--out", str(out), *more]


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(np.int64)


def test_writes_the_image_the_panel_and_a_json_report(
    picture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, panel = tmp_path / "adv.png", tmp_path / "panel.png"
    args = _args(picture, out, "--target", "cool", "--panel", str(panel), "--json", "-q")
    code, stdout, err = run_cli(capsys, *args)
    assert code == 0, err
    report = json.loads(stdout)
    assert report["success"] is True and 1 <= report["steps"] < report["max_steps"] == 100
    assert report["target"] == {"index": 1, "name": "cool"}
    assert report["before"][0]["name"] == "warm" and report["after"][0]["name"] == "cool"
    assert report["eps"] == pytest.approx(2 / 255) and report["eps_levels"] == 2
    assert report["linf_levels"] == 2 and report["linf"] == pytest.approx(2 / 255)
    assert report["l2_levels"] == pytest.approx(report["l2"] * 255)
    assert [set(p) for p in report["after"]] == [{"index", "name", "prob"}] * 3
    # The PNG is the adversarial image: within two levels, and classified again it is "cool".
    assert np.abs(_pixels(out) - _pixels(picture)).max() == 2
    assert tiny_model().classify(load_image(out))[0][0].name == "cool"
    assert "adversarial" in json.loads(png_text(out)["convscope"])["recipe"]
    with Image.open(panel) as im:
        assert im.width >= 3 * 16 and im.height > 16


def test_the_text_report_shows_both_top_classes_and_the_distances(
    picture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, stdout, err = run_cli(capsys, *_args(picture, tmp_path / "a.png", "-t", "cool"))
    assert code == 0, err
    assert "warm" in stdout and "cool" in stdout and "reached in" in stdout
    assert "L∞" in stdout and "2 8-bit levels" in stdout and "L2" in stdout
    assert "Wrote" in err


def test_reproduce_makes_the_same_bytes(
    picture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, panel = tmp_path / "adv.png", tmp_path / "panel.png"
    args = _args(picture, out, "--untargeted", "--eps", "0.01", "--panel", str(panel), "-q")
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    panel_bytes = panel.read_bytes()
    again = tmp_path / "again.png"
    code, _, err = run_cli(capsys, "reproduce", str(out), "--out", str(again), "-q")
    assert code == 0, err
    assert again.read_bytes() == out.read_bytes()
    assert panel.read_bytes() == panel_bytes  # the panel is not written again
    code, shown, _ = run_cli(capsys, "reproduce", str(out), "--show")
    assert "--untargeted" in shown and "--eps 0.01" in shown and "--panel" not in shown


def test_the_default_eps_is_recorded_as_a_fraction(
    picture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "adv.png"
    code, _, err = run_cli(capsys, *_args(picture, out, "-t", "cool", "-q"))
    assert code == 0, err
    command = json.loads(png_text(out)["convscope"])["command"]
    assert command[command.index("--eps") + 1] == "2/255"


def test_dry_run_estimates_and_writes_nothing(
    picture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "adv.png"
    code, stdout, err = run_cli(capsys, *_args(picture, out, "-t", "cool", "--dry-run"))
    assert code == 0, err
    assert "per step" in stdout and not out.exists()


def test_ctrl_c_writes_nothing(
    picture: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import convscope.synthesize.recipes.adversarial as recipe

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(recipe, "adversarial", interrupted)
    out = tmp_path / "adv.png"
    code, _, err = run_cli(
        capsys, *_args(picture, out, "-t", "cool", "--panel", str(tmp_path / "p.png"))
    )
    assert code == 130 and err.strip() == "Interrupted: nothing was written."
    assert not out.exists()


NO_CLASSES = """
from torch import nn


def net():
    return nn.Sequential(nn.Conv2d(3, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
"""

BAD = {
    "eps 0": (["-t", "cool", "--eps", "0"], "--eps must be in (0, 1]"),
    "eps 2": (["-t", "cool", "--eps", "2"], "--eps must be in (0, 1]"),
    "eps nan": (["-t", "cool", "--eps", "nan"], "--eps must be a finite number"),
    "eps inf/255": (["-t", "cool", "--eps", "inf/255"], "--eps must be a finite number"),
    "eps words": (["-t", "cool", "--eps", "two"], "--eps must be a number or a fraction"),
    "eps 1/0": (["-t", "cool", "--eps", "1/0"], "divides by zero"),
    "eps under a level": (["-t", "cool", "--eps", "0.001"], "less than one 8-bit level"),
    "steps 0": (["-t", "cool", "--steps", "0"], "--steps"),
    "step size 0": (["-t", "cool", "--step-size", "0"], "--step-size must be in (0, 1]"),
    "unknown class": (["-t", "nosuch"], "Unknown class 'nosuch'"),
    "no target": ([], "--target"),
    "untargeted with a target": (["--untargeted", "-t", "cool"], "leave --target out"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_sentence_and_writes_nothing(
    case: str, picture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    more, words = BAD[case]
    out, panel = tmp_path / "adv.png", tmp_path / "panel.png"
    code, _, err = run_cli(capsys, *_args(picture, out, *more, "--panel", str(panel)))
    assert code == 2, err
    assert words in assert_one_sentence(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_a_model_without_classes_is_refused(
    picture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    factory = tmp_path / "plain.py"
    factory.write_text(NO_CLASSES)
    out = tmp_path / "adv.png"
    args = ["adversarial", str(picture), "-m", f"{factory}:net", "-t", "0", "--out", str(out)]
    code, _, err = run_cli(capsys, *args)
    assert code == 2, err
    assert "has no classes" in assert_one_sentence(err)
    assert not out.exists()


def test_an_unreadable_image_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    out = tmp_path / "adv.png"
    code, _, err = run_cli(capsys, *_args(bad, out, "-t", "cool"))
    assert code == 2, err
    assert "bad.png" in assert_one_sentence(err)
    assert not out.exists()
