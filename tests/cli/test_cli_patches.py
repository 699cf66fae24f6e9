"""`convscope top-patches`: output, bad inputs, and the 2-process torchrun scan."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from convscope.cli.testing import run_cli

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    g = torch.Generator().manual_seed(3)
    for i in range(13):
        arr = (torch.rand(16, 20, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(root / ("a" if i % 2 else "b") / f"img{i:02d}.png")
    (root / "a" / "broken.png").write_bytes(b"not a png")
    return root


BASE = ["--model", "tiny", "--layer", "relu1", "--k", "3", "--channels", "all"]


def test_writes_figure_and_reports_skipped(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "top.png"
    code, _, err = run_cli(capsys, "top-patches", str(folder), *BASE, "--out", str(out), "--guided")
    assert code == 0, err
    assert "1 unreadable" in err
    with Image.open(out) as im:
        assert im.width > 6 * 20  # 3 patches + 3 guided images per row
    assert not list(tmp_path.glob(".*scan-state*"))  # cleaned up after success


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--channels", "9"], "out of range"),
        (["--channels", "1-x"], "channel"),
        (["--k", "40"], "larger than the dataset"),
        (["--layer", "fc"], "spatial"),
        (["--layer", "conv9"], "Unknown layer"),
        (["--precision", "fp8"], "fp32 or bf16"),
        (["--checkpoint-seconds", "0"], "more than 0"),
        (["--checkpoint-seconds", "-1.5"], "more than 0"),
        (["--checkpoint-seconds", "nan"], "finite"),
    ],
)
def test_bad_inputs(
    folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    out = tmp_path / "top.png"
    args = ["top-patches", str(folder), "--model", "tiny", "--layer", "relu1", "--out", str(out)]
    code, _, err = run_cli(capsys, *args, *extra)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "top-patches", str(tmp_path / "empty"), *BASE, "--out",
                    str(tmp_path / "x.png"))  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_two_process_torchrun_equals_single_process(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    single = tmp_path / "single.safetensors"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun worker below, so the arithmetic is the same
    try:
        code, _, err = run_cli(capsys, "top-patches", str(folder), *BASE,
                               "--out", str(tmp_path / "s.png"),
                               "--save-topk", str(single), "--quiet")  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err
    multi = tmp_path / "multi.safetensors"
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "convscope", "top-patches", str(folder), *BASE, "--out", str(tmp_path / "m.png"),
        "--save-topk", str(multi), "--quiet", "--device", "cpu",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = load_file(str(single)), load_file(str(multi))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), (key, (a[key] - b[key]).abs().max())
