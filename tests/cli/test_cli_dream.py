"""`convscope dream`: a still PNG that reproduces to the same bytes, a guided dream, the zoom
animation as a GIF, --dry-run, and one sentence for every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from convscope.cli.testing import assert_one_sentence, run_cli
from convscope.data.images import png_text

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["coffee", "-m", "tiny", "-l", "act", "--size", "40", "--octaves", "2", "--steps", "2"]


def test_a_still_dream_reproduces_to_the_same_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, again = tmp_path / "d.png", tmp_path / "e.png"
    code, _, err = run_cli(capsys, "dream", *FAST, "--out", str(first))
    assert code == 0, err
    assert "Wrote" in err and "2 octaves" in " ".join(err.split())
    with Image.open(first) as im:
        assert im.size == (40, 27)  # coffee is 600×400: the longer side is 40 px
    recipe = json.loads(png_text(first)["convscope"])
    assert recipe["recipe"] == "dream" and recipe["objective"] == "deepdream('act')"
    code, _, err = run_cli(capsys, "reproduce", str(first), "--out", str(again), "--quiet")
    assert code == 0, err
    assert first.read_bytes() == again.read_bytes()


def test_a_guided_dream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "g.png"
    code, _, err = run_cli(capsys, "dream", *FAST, "--guide", "cat", "--out", str(out), "-q")
    assert code == 0, err
    assert json.loads(png_text(out)["convscope"])["objective"] == "guide('act')"


def test_frames_make_a_gif(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "z.gif"
    args = ["dream", *FAST, "--frames", "3", "--zoom", "1.1", "--fps", "4", "--out", str(out)]
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "3 frames" in " ".join(err.split())
    with Image.open(out) as im:
        assert im.format == "GIF" and im.n_frames == 3 and im.info["duration"] == 250
        recipe = json.loads(im.info["comment"])
    assert recipe["recipe"] == "dream" and recipe["frames"] == 3
    assert "--frames" in recipe["command"] and "--zoom" in recipe["command"]


def test_a_dry_run_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["dream", *FAST, "--tile", "16", "--out", str(tmp_path / "d.png"), "--dry-run"]
    code, text, err = run_cli(capsys, *args)
    assert code == 0, err
    assert text.startswith("dream: about") and "4 steps take" in text
    assert list(tmp_path.iterdir()) == []


def _notes(folder: Path) -> Path:
    path = folder / "notes.png"
    path.write_text("this is not an image\n")
    return path


TINY = ["coffee", "-m", "tiny", "-l", "act", "--size", "24"]
SMALL_TILE = ["coffee", "-m", "vgg16", "--weights", "random", "-l", "relu4_3", "--tile", "64"]
BAD = {
    "unknown layer": lambda d: ["coffee", "-m", "tiny", "-l", "conv9"],
    "--octave-scale 1": lambda d: [*TINY, "--octave-scale", "1"],
    "--octave-scale 0.5": lambda d: [*TINY, "--octave-scale", "0.5"],
    "--octaves 0": lambda d: [*TINY, "--octaves", "0"],
    "--steps 0": lambda d: [*TINY, "--steps", "0"],
    "tile under the receptive field": lambda d: [*SMALL_TILE],
    "--zoom 0": lambda d: [*TINY, "--frames", "2", "--zoom", "0"],
    "--zoom -1": lambda d: [*TINY, "--frames", "2", "--zoom", "-1"],
    "--zoom nan": lambda d: [*TINY, "--frames", "2", "--zoom", "nan"],
    "--frames 0": lambda d: [*TINY, "--frames", "0"],
    "unreadable image": lambda d: [str(_notes(d)), "-m", "tiny", "-l", "act"],
    "unreadable guide": lambda d: [*TINY, "--guide", str(_notes(d))],
    "missing guide": lambda d: [*TINY, "--guide", str(d / "none.jpg")],
    "channel out of range": lambda d: [*TINY, "--channels", "0,5"],
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_with_one_sentence_and_writes_nothing(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    out = tmp_path / ("out.gif" if "--frames" in BAD[case](inputs) else "out.png")
    code, _, err = run_cli(capsys, "dream", *BAD[case](inputs), "--out", str(out))
    assert code == 2, err
    assert_one_sentence(err)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["inputs"]


def test_the_error_for_a_small_tile_says_what_it_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["coffee", "-m", "vgg16", "--weights", "random", "--tile", "64"]
    code, _, err = run_cli(capsys, "dream", *args, "--out", str(tmp_path / "d.png"))
    assert code == 2
    assert assert_one_sentence(err) == (
        "Error: --tile 64 is smaller than the 92 px receptive field of layer relu4_3; "
        "give --tile 92 or more."
    )


@pytest.mark.parametrize(
    ("name", "frames", "words"),
    [
        ("d.mp4", "2", "not .mp4 (MP4 would need PyAV"),
        ("d.png", "2", "written as .gif, not .png"),
        ("d.jpg", None, "a dream is written as .png, not .jpg"),
        ("d.gif", None, "with --frames it is an animation"),
    ],
)
def test_an_output_suffix_it_cannot_write_is_refused(
    name: str, frames: str | None, words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*TINY, "--out", str(tmp_path / name)] + (["--frames", frames] if frames else [])
    code, _, err = run_cli(capsys, "dream", *args)
    assert code == 2 and words in assert_one_sentence(err)
    assert list(tmp_path.iterdir()) == []
