"""`convscope segment` and `convscope faithfulness` on the tiny model: outputs, exit codes,
and one sentence (and no output file) for every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convscope.cli.testing import assert_one_sentence, run_cli


def _square(path: Path, size: int = 32, color: tuple[int, int, int] = (230, 40, 30)) -> Path:
    """A warm square on a dark blue, slightly noisy background."""
    rng = np.random.default_rng(0)
    a = np.zeros((size, size, 3), np.uint8)
    a[..., 2] = 90 + rng.integers(0, 30, (size, size))
    a[size // 4 : size // 2 + 4, size // 3 : size // 3 + 12] = color
    Image.fromarray(a).save(path)
    return path


@pytest.fixture
def square(tmp_path: Path) -> Path:
    return _square(tmp_path / "square.png")


def test_segment_writes_mask_and_cutout(
    capsys: pytest.CaptureFixture[str], square: Path, tmp_path: Path
) -> None:
    mask_path, cut_path = tmp_path / "mask.png", tmp_path / "cut.png"
    code, _, err = run_cli(
        capsys,
        "segment", str(square), "--model", "tiny", "--target", "warm",
        "--out", str(mask_path), "--cutout", str(cut_path),
    )  # fmt: skip
    assert code == 0, err
    assert "warm" in err and "mask.png" in err
    with Image.open(mask_path) as im:
        assert im.mode == "L" and im.size == (32, 32)
        mask = np.array(im) > 127
    square_mask = np.zeros((32, 32), bool)
    square_mask[8:20, 10:22] = True
    assert (mask & square_mask).sum() / (mask | square_mask).sum() >= 0.6
    with Image.open(cut_path) as im:
        assert im.mode == "RGBA"
        alpha = np.array(im)[..., 3]
    assert np.array_equal(alpha > 0, mask)
    # Thresholds are options.
    code, _, err = run_cli(
        capsys,
        "segment", str(square), "--model", "tiny", "--out", str(mask_path),
        "--fg-quantile", "0.9", "--probable-fg-quantile", "0.8", "--bg-quantile", "0.5",
        "--method", "gradcam", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert err == ""


def test_faithfulness_table_json_plot_and_sanity(
    capsys: pytest.CaptureFixture[str], square: Path, tmp_path: Path
) -> None:
    other = _square(tmp_path / "other.png", size=24, color=(240, 200, 20))
    plot = tmp_path / "curves.png"
    code, out, err = run_cli(
        capsys,
        "faithfulness", str(square), str(other), "--model", "tiny",
        "--methods", "gradient,gradcam", "--steps", "4", "--random-maps", "2",
        "--out", str(plot), "--json",
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    methods = {(r["image"], r["method"]) for r in data["rows"]}
    assert methods == {
        (str(p), m) for p in (square, other) for m in ("gradient", "gradcam", "random")
    }
    assert all(0.0 <= r["deletion_auc"] <= 1.0 for r in data["rows"])
    assert data["steps"] == 4 and len(data["curves"][0]["deletion"]) == 5
    with Image.open(plot) as im:
        assert im.size[0] >= 800
    code, out, err = run_cli(
        capsys,
        "faithfulness", str(square), "--model", "tiny", "--methods", "gradient",
        "--steps", "4", "--sanity", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "deletion AUC" in out and "random" in out
    assert "Spearman" in out and "fc" in out and "conv1" in out
    assert "changes with the model" in out or "insensitive to the model" in out
    code, out, err = run_cli(
        capsys,
        "faithfulness", str(square), "--model", "tiny", "--methods", "gradient",
        "--steps", "2", "--sanity", "--json",
    )  # fmt: skip
    assert code == 0, err
    sanity = json.loads(out)["sanity"]["results"][0]
    assert sanity["method"] == "gradient" and len(sanity["steps"]) == 3
    assert isinstance(sanity["insensitive"], bool)


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in ("segment", "faithfulness"):
        code, out, _ = run_cli(capsys, cmd, "--help")
        assert code == 0 and "Usage" in out


BAD = {
    "segment: unknown method": (["segment", "{img}", "--method", "gradiant"], "gradient"),
    "segment: unknown class": (["segment", "{img}", "--target", "wrm"], "warm"),
    "segment: bg >= fg": (["segment", "{img}", "--bg-quantile", "0.96"], "bg-quantile"),
    "segment: bg >= probable fg": (
        ["segment", "{img}", "--probable-fg-quantile", "0.2"],
        "probable-fg-quantile",
    ),
    "segment: quantile 1": (["segment", "{img}", "--fg-quantile", "1"], "fg-quantile"),
    "segment: constant map": (["segment", "{flat}"], "constant"),
    "segment: cut-out folder missing": (
        ["segment", "{img}", "--cutout", "{dir}/nope/cut.png"],
        "does not exist",
    ),
    "segment: same file twice": (["segment", "{img}", "--cutout", "{out}"], "different"),
    "segment: missing image": (["segment", "{dir}/nope.png"], "does not exist"),
    "faithfulness: unknown method": (
        ["faithfulness", "{img}", "--methods", "gradient,oclusion"],
        "occlusion",
    ),
    "faithfulness: no method": (["faithfulness", "{img}", "--methods", ","], "method"),
    "faithfulness: unknown class": (["faithfulness", "{img}", "--target", "kool"], "cool"),
    "faithfulness: unknown baseline": (["faithfulness", "{img}", "--baseline", "gray"], "blur"),
    "faithfulness: zero steps": (["faithfulness", "{img}", "--steps", "0"], "steps"),
    "faithfulness: patch too big": (["faithfulness", "{img}", "--patch", "99"], "patch"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_inputs_exit_2_with_one_sentence_and_no_output(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, square: Path, case: str
) -> None:
    flat = tmp_path / "flat.png"
    Image.new("RGB", (16, 16), (0, 0, 0)).save(flat)
    out = tmp_path / "out.png"
    args, hint = BAD[case]
    argv = [
        a.format(img=square, flat=flat, dir=tmp_path, out=out)
        for a in [*args, "--model", "tiny", "--out", "{out}"]
    ]
    if args[0] == "faithfulness":
        argv += ["--steps", "2"] if "--steps" not in args else []
    code, _, err = run_cli(capsys, *argv)
    assert code == 2, err
    assert_one_sentence(err)
    assert hint in err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["square.png", "flat.png"]), (
        "an output file was left behind"
    )
