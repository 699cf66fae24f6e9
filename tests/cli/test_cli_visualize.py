"""`convscope visualize` and `convscope reproduce`: the PNG and its recipe, the same bytes
again, --dry-run, Ctrl-C and --resume, and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from convscope.cli.reproduce import read_recipe
from convscope.cli.testing import assert_one_sentence, run_cli
from convscope.events import Progress

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = ["visualize", "-m", "tiny", "--layer", "relu1", "--steps", "6", "--size", "16", "-q"]


def test_writes_the_image_with_its_recipe_and_reproduces_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "v.png"
    code, _, err = run_cli(capsys, *BASE, "--channel", "2", "--seed", "4", "-o", str(out))
    assert code == 0, err
    with Image.open(out) as im:
        assert im.size == (16, 16)
    recipe = read_recipe(out)
    assert recipe["recipe"] == "visualize" and recipe["model"] == "tiny" and recipe["seed"] == 4
    assert recipe["objective"] == "channel('relu1', 2)"
    command = recipe["command"]
    assert command[0] == "visualize" and "--out" not in command and "--preset" in command
    again = tmp_path / "again.png"
    code, _, err = run_cli(capsys, "reproduce", str(out), "-o", str(again), "-q")
    assert code == 0, err
    assert again.read_bytes() == out.read_bytes()
    code, shown, _ = run_cli(capsys, "reproduce", str(out), "--show")
    assert code == 0 and shown.startswith("convscope visualize --model tiny")


def test_channels_make_a_grid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "grid.png"
    code, _, err = run_cli(capsys, *BASE, "--channels", "0-3", "-o", str(out))
    assert code == 0, err
    with Image.open(out) as im:
        assert im.width * im.height > 4 * 16 * 16  # four tiles and their labels


def test_dry_run_estimates_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "v.png"
    code, stdout, err = run_cli(capsys, *BASE, "--channel", "0", "--dry-run", "-o", str(out))
    assert code == 0, err
    assert "MB at the peak" in stdout and "ms per step" in stdout and "6 steps" in stdout
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_then_resume_equals_an_uninterrupted_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import convscope.synthesize.recipes.visualize as recipe

    args = ["visualize", "-m", "tiny", "--layer", "relu1", "--channel", "1", "--size", "16"]
    args += ["--steps", "30", "-q"]
    whole = tmp_path / "whole.png"
    assert run_cli(capsys, *args, "-o", str(whole))[0] == 0
    real = recipe.visualize

    def interrupted(*a: Any, **k: Any) -> Any:
        bar = k["on_progress"]

        def press_ctrl_c(event: Progress) -> None:
            bar(event)
            if event.done == 12:
                raise KeyboardInterrupt

        k["on_progress"] = press_ctrl_c
        return real(*a, **k)

    out = tmp_path / "v.png"
    monkeypatch.setattr(recipe, "visualize", interrupted)
    code, _, err = run_cli(capsys, *args, "-o", str(out))
    assert code == 130 and "--resume" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    monkeypatch.setattr(recipe, "visualize", real)
    code, _, err = run_cli(capsys, *args, "-o", str(out), "--resume")
    assert code == 0, err
    assert out.read_bytes() == whole.read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


BAD = {
    "unknown preset": ["--channel", "0", "--preset", "olah"],
    "no target": [],
    "two targets": ["--channel", "0", "--class", "warm"],
    "channel out of range": ["--channel", "9"],
    "neuron outside the layer": ["--channel", "0", "--neuron", "40,0"],
    "malformed neuron": ["--channel", "0", "--neuron", "3"],
    "zero steps": ["--channel", "0", "--steps", "0"],
    "bad channels": ["--channels", "0-9"],
    "nothing to resume": ["--channel", "0", "--resume"],
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_sentence_and_writes_nothing(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "v.png"
    code, _, err = run_cli(capsys, *BASE, *BAD[case], "-o", str(out))
    assert code == 2, err
    assert_one_sentence(err)
    assert list(tmp_path.iterdir()) == []


def test_a_model_without_classes_and_a_foreign_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "v.png"
    bare = ["visualize", "-m", "convscope.models.tiny:TinyNet", "--class", "warm", "-q"]
    code, _, err = run_cli(capsys, *bare, "--size", "16", "-o", str(out))
    assert code == 2 and "has no classes" in assert_one_sentence(err)
    # A saved state of another run (here: another channel) is refused on --resume.
    from convscope.cli.synthesis import state_path

    other = tmp_path / "other.png"
    import convscope.synthesize.recipes.visualize as recipe

    real = recipe.visualize

    def stop(*a: Any, **k: Any) -> Any:
        def boom(event: Progress) -> None:
            if event.done == 2:
                raise KeyboardInterrupt

        k["on_progress"] = boom
        return real(*a, **k)

    recipe.visualize = stop  # type: ignore[assignment]
    try:
        assert run_cli(capsys, *BASE, "--channel", "0", "-o", str(other))[0] == 130
    finally:
        recipe.visualize = real  # type: ignore[assignment]
    state_path(other).rename(state_path(out))
    code, _, err = run_cli(capsys, *BASE, "--channel", "3", "-o", str(out), "--resume")
    assert code == 2 and "different run" in assert_one_sentence(err)
    assert not out.exists()


def test_reproduce_refuses_an_image_without_a_recipe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(plain)
    code, _, err = run_cli(capsys, "reproduce", str(plain), "-o", str(tmp_path / "x.png"))
    assert code == 2 and "carries no convscope recipe" in assert_one_sentence(err)
    broken = tmp_path / "broken.png"
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_itxt("convscope", json.dumps({"recipe": "visualize"}))
    Image.new("RGB", (4, 4)).save(broken, pnginfo=info)
    code, _, err = run_cli(capsys, "reproduce", str(broken), "-o", str(tmp_path / "y.png"))
    assert code == 2 and "no command" in assert_one_sentence(err)
