"""`convscope invert`: the panel and its numbers, --json, --dry-run, reproduce, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from convscope.cli.testing import assert_one_sentence, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["coffee", "-m", "tiny", "--layers", "relu1,act", "--size", "16", "--steps", "4"]


def test_the_panel_and_its_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "inv.png"
    code, text, err = run_cli(capsys, "invert", *FAST, "--out", str(out), "--json")
    assert code == 0, err
    report = json.loads(text)
    assert [row["layer"] for row in report["layers"]] == ["relu1", "act"]
    assert {"psnr_db", "feature_error", "tv_weight", "steps"} <= set(report["layers"][0])
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width == 3 * 192 + 4 * 4
    code, text, err = run_cli(capsys, "invert", *FAST, "--out", str(out), "--quiet")
    assert code == 0 and text == "" and err == ""
    code, text, _ = run_cli(capsys, "invert", *FAST, "--out", str(out))
    assert code == 0 and "relu1: PSNR" in text and "feature error" in text


def test_reproduce_gives_the_same_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, again = tmp_path / "a.png", tmp_path / "b.png"
    code, _, err = run_cli(capsys, "invert", *FAST, "--out", str(first), "--quiet")
    assert code == 0, err
    code, _, err = run_cli(capsys, "reproduce", str(first), "--out", str(again), "--quiet")
    assert code == 0, err
    assert first.read_bytes() == again.read_bytes()


def test_a_dry_run_estimates_each_layer_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text, err = run_cli(
        capsys, "invert", *FAST, "--out", str(tmp_path / "x.png"), "--dry-run"
    )
    assert code == 0, err
    lines = text.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("invert relu1:") and "MB at the peak" in text
    assert list(tmp_path.iterdir()) == []


def _notes(tmp_path: Path) -> Path:
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    return path


BAD = {
    "unknown layer": lambda d: ["coffee", "-m", "tiny", "--layers", "relu1,conv9"],
    "empty --layers": lambda d: ["coffee", "-m", "tiny", "--layers", " , "],
    "--steps 0": lambda d: ["coffee", "-m", "tiny", "--layers", "act", "--steps", "0"],
    "--size 8": lambda d: ["coffee", "-m", "tiny", "--layers", "act", "--size", "8"],
    "--tv -1": lambda d: ["coffee", "-m", "tiny", "--layers", "act", "--tv", "-1"],
    "unreadable image": lambda d: [str(_notes(d)), "-m", "tiny", "--layers", "act"],
    "missing image": lambda d: [str(d / "none.png"), "-m", "tiny", "--layers", "act"],
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_with_one_sentence_and_writes_nothing(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    out = tmp_path / "out.png"
    code, _, err = run_cli(capsys, "invert", *BAD[case](inputs), "--out", str(out))
    assert code == 2, err
    assert_one_sentence(err)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["inputs"]
