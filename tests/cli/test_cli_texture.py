"""`convscope texture`: both methods, the progression panel, reproduce, --dry-run, and bad
input (one sentence, exit 2, no output)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from convscope.cli.testing import assert_one_sentence, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

GATYS = ["brick", "-m", "tiny", "--layers", "relu1,act", "--size", "16", "--steps", "3"]
EL = ["brick", "--method", "efros-leung", "--style-size", "24", "--size", "20", "--levels", "1"]


def test_a_gatys_texture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.png"
    code, text, err = run_cli(
        capsys, "texture", *GATYS, "--size", "20", "--out", str(out), "--json"
    )
    assert code == 0, err
    report = json.loads(text)
    assert report["layers"] == ["relu1", "act"] and report["size"] == [20, 20]
    with Image.open(out) as im:
        assert im.size == (20, 20)
        assert json.loads(im.text["convscope"])["recipe"] == "texture"


def test_the_progression_is_one_panel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.png"
    code, text, err = run_cli(
        capsys, "texture", *GATYS, "--progression", "--out", str(out), "--json"
    )
    assert code == 0, err
    assert [r["layers"] for r in json.loads(text)] == [["relu1"], ["relu1", "act"]]
    with Image.open(out) as im:
        assert im.width > 3 * 160  # the source and two textures side by side


def test_efros_leung(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "el.png"
    code, text, err = run_cli(capsys, "texture", *EL, "--out", str(out), "--json")
    assert code == 0, err
    report = json.loads(text)
    assert report["method"] == "efros-leung" and report["size"] == [20, 20]
    with Image.open(out) as im:
        assert im.size == (20, 20)
        recipe = json.loads(im.text["convscope"])
    assert recipe["model"] is None


@pytest.mark.parametrize("args", [GATYS, EL], ids=["gatys", "efros-leung"])
def test_reproduce_gives_the_same_bytes(
    args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, again = tmp_path / "a.png", tmp_path / "b.png"
    code, _, err = run_cli(capsys, "texture", *args, "--seed", "5", "--out", str(first), "-q")
    assert code == 0, err
    code, _, err = run_cli(capsys, "reproduce", str(first), "--out", str(again), "--quiet")
    assert code == 0, err
    assert first.read_bytes() == again.read_bytes()


def test_a_dry_run_estimates_each_layer_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["texture", *GATYS, "--progression", "--dry-run", "--out", str(tmp_path / "x.png")]
    code, text, err = run_cli(capsys, *args)
    assert code == 0, err
    lines = text.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("texture to act") and "MB at the peak" in text
    assert list(tmp_path.iterdir()) == []


def _notes(tmp_path: Path) -> Path:
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    return path


BAD = {
    "unreadable image": lambda d: [str(_notes(d)), "-m", "tiny", "--layers", "act"],
    "unknown layer": lambda d: ["brick", "-m", "tiny", "--layers", "relu1,conv9"],
    "size too small": lambda d: ["brick", "-m", "tiny", "--layers", "act", "--size", "8"],
    "style size too small for the layers": lambda d: [
        "brick",
        "-m",
        "tiny",
        "--layers",
        "act",
        "--style-size",
        "1",
    ],
    "steps 0": lambda d: ["brick", "-m", "tiny", "--layers", "act", "--steps", "0"],
    "gatys option with efros-leung": lambda d: [*EL, "--steps", "3"],
    "efros-leung option with gatys": lambda d: [*GATYS, "--window", "5"],
    "even window": lambda d: [*EL, "--window", "4"],
    "progression with efros-leung": lambda d: [*EL, "--progression"],
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_with_one_sentence_and_writes_nothing(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    out = tmp_path / "out.png"
    code, _, err = run_cli(capsys, "texture", *BAD[case](inputs), "--out", str(out))
    assert code == 2, err
    assert_one_sentence(err)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["inputs"]
