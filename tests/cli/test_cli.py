"""The command line: outputs, exit codes, and one clear sentence for every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from convscope.cli.testing import assert_one_sentence, run_cli


@pytest.fixture
def png(tmp_path: Path) -> Path:
    path = tmp_path / "red.png"
    Image.new("RGB", (16, 12), (255, 0, 0)).save(path)
    return path


def test_models_lists_offline_status(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "models", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["tiny"]["offline"] is True
    assert rows["resnet50"]["offline"] is False
    assert "DEFAULT" in rows["resnet50"]["how"]


def test_layers_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "layers", "tiny", "--size", "8", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["pool1"]["shape"] == [1, 4, 4, 4]
    assert rows["relu2"]["alias"] == "act"
    code, out, _ = run_cli(capsys, "layers", "tiny", "--size", "8", "--layer", "act")
    assert code == 0 and "relu2" in out and "conv1" not in out


def test_layers_without_offline_weights_still_shows_shapes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run_cli(capsys, "layers", "squeezenet1_1", "--size", "64", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["features.0"]["shape"] == [1, 64, 31, 31]


def test_classify_tiny(capsys: pytest.CaptureFixture[str], png: Path, tmp_path: Path) -> None:
    code, out, _ = run_cli(capsys, "classify", str(png), "--model", "tiny", "--top", "2", "--json")
    assert code == 0
    result = json.loads(out)
    assert result[0]["predictions"][0]["name"] == "warm"
    assert len(result[0]["predictions"]) == 2
    target = tmp_path / "out.json"
    code, _, _ = run_cli(capsys, "classify", str(png), "--model", "tiny", "--out", str(target))
    assert code == 0 and json.loads(target.read_text())[0]["image"] == str(png)
    code, out, _ = run_cli(capsys, "classify", str(png), "--model", "tiny")
    assert code == 0 and "warm" in out


def test_help_on_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in ("models", "layers", "classify", "demo"):
        code, out, _ = run_cli(capsys, cmd, "--help")
        assert code == 0 and "Usage" in out


def test_internal_error_exits_1_with_hint(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, png: Path
) -> None:
    import convscope.cli.zoo as zoo

    def broken(*_a: object, **_k: object) -> None:
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(zoo, "open_model", broken)
    code, _, err = run_cli(capsys, "classify", str(png), "--model", "tiny")
    assert code == 1 and "--debug" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "classify", str(png), "--model", "tiny", "--debug")
    assert code == 1 and "Traceback" in err


def _write_truncated_jpeg(path: Path) -> None:
    Image.new("RGB", (64, 64), (10, 200, 30)).save(path, "JPEG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _write_huge_png(path: Path) -> None:
    Image.new("1", (12000, 12000)).save(path)  # 144 MP, a few kB on disk


BAD_INPUTS = {
    "missing file": lambda d: ["classify", str(d / "nope.jpg"), "--model", "tiny"],
    "directory": lambda d: ["classify", str(d), "--model", "tiny"],
    "non-image": lambda d: ["classify", str(d / "notes.png"), "--model", "tiny"],
    "truncated jpeg": lambda d: ["classify", str(d / "cut.jpg"), "--model", "tiny"],
    "zero-byte file": lambda d: ["classify", str(d / "empty.png"), "--model", "tiny"],
    "huge image": lambda d: ["classify", str(d / "huge.png"), "--model", "tiny"],
    "unknown model": lambda d: ["classify", "coffee", "--model", "resnet5O"],
    "unknown layer": lambda d: ["layers", "tiny", "--layer", "conv3"],
    "bad --top (0)": lambda d: ["classify", "coffee", "--model", "tiny", "--top", "0"],
    "bad --top (negative)": lambda d: ["classify", "coffee", "--model", "tiny", "--top", "-3"],
    "bad --device": lambda d: ["classify", "coffee", "--model", "tiny", "--device", "tpu"],
    "unknown sample": lambda d: ["classify", "cofee", "--model", "tiny"],
    "offline weights": lambda d: ["classify", "coffee", "--model", "resnet18"],
    "bad weights file": lambda d: [
        "classify",
        "coffee",
        "--model",
        "tiny",
        "--weights",
        str(d / "notes.png"),
    ],
    "unknown option": lambda d: ["classify", "coffee", "--colour"],
    "bad --size": lambda d: ["layers", "tiny", "--size", "0"],
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_sentence(
    case: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "notes.png").write_text("this is not an image\n")
    (inputs / "empty.png").write_bytes(b"")
    _write_truncated_jpeg(inputs / "cut.jpg")
    _write_huge_png(inputs / "huge.png")
    out_file = tmp_path / "result.json"
    args = [*BAD_INPUTS[case](inputs)]
    if args[0] == "classify":
        args += ["--out", str(out_file)]
    code, _, err = run_cli(capsys, *args)
    assert code == 2, err
    assert_one_sentence(err)
    assert not out_file.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp file left"


def test_huge_image_guard_can_be_raised(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (300, 300), (0, 0, 255)).save(path)
    code, _, err = run_cli(capsys, "classify", str(path), "--model", "tiny", "--max-pixels", "1000")
    assert code == 2 and "--max-pixels" in err
    code, _, _ = run_cli(capsys, "classify", str(path), "--model", "tiny", "--max-pixels", "100000")
    assert code == 0


def test_demo_refuses_a_file_as_out(capsys: pytest.CaptureFixture[str], png: Path) -> None:
    code, _, err = run_cli(capsys, "demo", "--out", str(png))
    assert code == 2
    assert_one_sentence(err)
