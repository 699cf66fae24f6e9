"""`convscope style`: the image and its report, --save-every, --dry-run, reproduce, colour and
masks, and bad input (one sentence, exit 2, no output)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from convscope.cli.testing import assert_one_sentence, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["-m", "tiny", "--content-layers", "act", "--style-layers", "relu1,act"]
FAST = ["coffee", "brick", *TINY, "--size", "24", "--steps", "3"]


def test_the_image_and_its_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "st.png"
    code, text, err = run_cli(capsys, "style", *FAST, "--out", str(out), "--json")
    assert code == 0, err
    report = json.loads(text)
    assert report["size"] == [16, 24]  # coffee is 400×600; the long side is --size
    assert report["steps"] == 3 and report["precision"] in ("fp32", "bf16")
    assert set(report["losses"]) == {"loss", "content", "style", "tv"}
    with Image.open(out) as im:
        assert im.size == (24, 16) and im.format == "PNG"
        recipe = json.loads(im.text["convscope"])
    assert recipe["recipe"] == "style" and recipe["command"][:3] == ["style", "coffee", "brick"]
    code, _, err = run_cli(capsys, "style", *FAST, "--out", str(out))
    assert code == 0, err
    assert "content" in err and "style" in err and "24x16" in err


def test_reproduce_gives_the_same_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, again = tmp_path / "a.png", tmp_path / "b.png"
    options = ["--original-colors", "--init", "noise", "--seed", "4", "--precision", "fp32"]
    code, _, err = run_cli(capsys, "style", *FAST, *options, "--out", str(first), "--quiet")
    assert code == 0, err
    code, _, err = run_cli(capsys, "reproduce", str(first), "--out", str(again), "--quiet")
    assert code == 0, err
    assert first.read_bytes() == again.read_bytes()


def test_save_every_writes_the_steps_beside_the_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "st.png"
    args = ["style", *FAST, "--steps", "4", "--save-every", "2", "--out", str(out), "--quiet"]
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["st.png", "st_00002.png", "st_00004.png"]
    with Image.open(tmp_path / "st_00002.png") as im:
        assert im.size == (24, 16)
    # A step file that cannot be written is found before any work.
    (tmp_path / "st_00002.png").unlink()
    (tmp_path / "st_00002.png").mkdir()
    (tmp_path / "st.png").unlink()
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and "is a folder" in assert_one_sentence(err)
    assert not out.exists()


def test_a_dry_run_estimates_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text, err = run_cli(capsys, "style", *FAST, "--out", str(tmp_path / "x.png"), "--dry-run")
    assert code == 0, err
    assert text.startswith("style 24x16") and "MB at the peak" in text and "per step" in text
    assert list(tmp_path.iterdir()) == []


def test_colour_options_masks_and_several_styles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    top = tmp_path / "top.png"
    bottom = tmp_path / "bottom.png"
    mask = Image.new("L", (600, 400), 0)
    mask.paste(255, (0, 0, 600, 200))
    mask.save(top)
    mask.point(lambda v: 255 - v).save(bottom)
    out = tmp_path / "st.png"
    base = ["style", "coffee", "brick", "grass", *TINY, "--size", "24", "--steps", "2", "--quiet"]
    for extra in (
        ["--mask", str(top), "--mask", str(bottom)],
        ["--style-blend-weights", "3,7", "--color-transfer", "histogram"],
        ["--color-transfer", "lab", "--original-colors", "--pooling", "avg"],
        ["--optimizer", "adam", "--lr", "0.05", "--init", "style", "--multiscale"],
        ["--init", str(top)],
        ["--dream-weight", "0.5", "--dream-layer", "relu1"],
    ):
        code, _, err = run_cli(capsys, *base, *extra, "--out", str(out))
        assert code == 0, (extra, err)
        with Image.open(out) as im:
            assert im.size == (24, 16)


def test_original_colors_keep_the_contents_chroma(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    from convscope.data.images import load_image
    from convscope.data.samples import load_sample
    from convscope.synthesize.colors import rgb_to_ycbcr
    from convscope.synthesize.octaves import resize

    out = tmp_path / "st.png"
    code, _, err = run_cli(
        capsys, "style", *FAST, "--original-colors", "--out", str(out), "--quiet"
    )
    assert code == 0, err
    made = rgb_to_ycbcr(load_image(out))[1:]
    content = resize(load_sample("coffee")[None], (16, 24)).clamp(0, 1)[0]
    want = rgb_to_ycbcr(content)[1:]
    # Up to the PNG's 8-bit rounding and the clamp of the few out-of-gamut pixels.
    assert float((made - want).abs().median()) < 2 / 255
    assert torch.corrcoef(torch.stack([made.flatten(), want.flatten()]))[0, 1] > 0.98


def _notes(tmp_path: Path) -> Path:
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    return path


def _mask(tmp_path: Path, size: tuple[int, int]) -> Path:
    path = tmp_path / f"mask{size[0]}.png"
    Image.new("L", size, 255).save(path)
    return path


BAD = {
    "unreadable style": lambda d: ["coffee", str(_notes(d)), *TINY],
    "missing style": lambda d: ["coffee", str(d / "none.png"), *TINY],
    "zero style weight": lambda d: ["coffee", "brick", *TINY, "--style-weight", "0"],
    "negative content weight": lambda d: ["coffee", "brick", *TINY, "--content-weight", "-1"],
    "negative tv weight": lambda d: ["coffee", "brick", *TINY, "--tv-weight", "-0.1"],
    "zero style scale": lambda d: ["coffee", "brick", *TINY, "--style-scale", "0"],
    "blend count": lambda d: ["coffee", "brick", *TINY, "--style-blend-weights", "1,2"],
    "blend not a number": lambda d: ["coffee", "brick", *TINY, "--style-blend-weights", "a"],
    "negative blend": lambda d: [
        "coffee",
        "brick",
        "grass",
        *TINY,
        "--style-blend-weights",
        "1,-1",
    ],
    "mask size": lambda d: ["coffee", "brick", *TINY, "--mask", str(_mask(d, (60, 40)))],
    "mask count": lambda d: [
        "coffee",
        "brick",
        "grass",
        *TINY,
        "--mask",
        str(_mask(d, (600, 400))),
    ],
    "unknown layer": lambda d: ["coffee", "brick", *TINY, "--style-layers", "relu1,conv9"],
    "too small for the layers": lambda d: ["coffee", "brick", *TINY, "--style-scale", "0.01"],
    "unknown init": lambda d: ["coffee", "brick", *TINY, "--init", "nosie"],
    "tile with lbfgs": lambda d: ["coffee", "brick", *TINY, "--tile", "64"],
    "dream without a layer": lambda d: ["coffee", "brick", *TINY, "--dream-weight", "1"],
    "steps 0": lambda d: ["coffee", "brick", *TINY, "--steps", "0"],
    "save-every 0": lambda d: ["coffee", "brick", *TINY, "--save-every", "0"],
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_with_one_sentence_and_writes_nothing(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    out = tmp_path / "out.png"
    code, _, err = run_cli(capsys, "style", *BAD[case](inputs), "--size", "24", "--out", str(out))
    assert code == 2, err
    assert_one_sentence(err)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["inputs"]


def test_the_messages_say_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "o.png")
    cases = [
        (["--style-scale", "0.01"], "act needs at least 2 px"),
        (["--style-blend-weights", "1,2"], "2 style blend weights for 1 style image"),
        (["--tile", "64"], "--tile needs --optimizer adam"),
    ]
    for extra, message in cases:
        args = ["style", "coffee", "brick", *TINY, "--size", "24", "--steps", "1", *extra]
        code, _, err = run_cli(capsys, *args, "--out", out)
        assert code == 2 and message in assert_one_sentence(err), err


def test_a_tile_smaller_than_the_receptive_field_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o.png"
    args = ["style", "coffee", "brick", "--size", "256", "--optimizer", "adam", "--tile", "96"]
    code, _, err = run_cli(capsys, *args, "--out", str(out))
    assert code == 2, err
    assert "receptive field of the deepest layer (132 px)" in assert_one_sentence(err)
    assert not out.exists()


def test_tiled_runs_ask_glibc_to_return_freed_memory() -> None:
    import sys

    from convscope.cli.common import return_freed_memory

    assert return_freed_memory() is sys.platform.startswith("linux")
