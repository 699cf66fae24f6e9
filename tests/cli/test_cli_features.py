"""`convscope features`, `neighbors` and `embed`: happy paths, Ctrl-C and --resume, and one
sentence with exit code 2 (and no output file) for every bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from convscope.cli.testing import assert_one_sentence, run_cli
from convscope.events import Progress
from convscope.inspect import features as feat_lib
from convscope.inspect.features import load_features, partial_path

SRC = Path(__file__).resolve().parents[2] / "src"
SLOW = f"{Path(__file__).with_name('slow_model.py')}:slow_tiny"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Two classes of coloured 12×10 images, and one unreadable file."""
    root = tmp_path / "imgs"
    colors = {"warm": [(250, 40, 0), (200, 90, 10), (255, 0, 60)], "cool": [(0, 40, 250)] * 3}
    for cls, cs in colors.items():
        (root / cls).mkdir(parents=True)
        for i, c in enumerate(cs):
            Image.new("RGB", (12, 10), (c[0], c[1] + i, c[2])).save(root / cls / f"{i}.png")
    (root / "cool" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


@pytest.fixture
def index(tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / "feats.safetensors"
    code, stdout, err = run_cli(
        capsys, "features", str(folder), "--model", "tiny", "--layer", "conv1", "--out", str(out)
    )
    assert code == 0, err
    assert "6 images × 4 features" in stdout and "(1 skipped)" in stdout
    return out


def test_features_writes_file_with_provenance(index: Path) -> None:
    ff = load_features(index)
    assert len(ff) == 6 and ff.skipped == 1 and ff.layer == "conv1" and ff.model == "tiny"
    assert ff.classes == ["cool", "warm"]


def test_features_builtin_dataset_with_smallnet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "d.safetensors"
    code, stdout, err = run_cli(
        capsys, "features", "digits", "--model", "smallnet", "--limit", "40", "--out", str(out),
        "--batch-size", "16", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "40 images × 32 features of smallnet embed (0 skipped)" in stdout
    assert load_features(out).provenance["dataset"] == "digits"


def test_features_ctrl_c_then_resume(
    tmp_path: Path,
    folder: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = feat_lib.extract_features

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        bar = kwargs["on_progress"]
        calls: list[int] = []

        def press_ctrl_c(event: Progress) -> None:
            bar(event)
            calls.append(event.done)
            if len(calls) == 3:  # the start, then two batches
                raise KeyboardInterrupt

        kwargs["on_progress"] = press_ctrl_c
        return real(*args, **kwargs)

    out = tmp_path / "f.safetensors"
    args = ["features", str(folder), "-m", "tiny", "-l", "act", "-o", str(out), "--batch-size", "2"]
    monkeypatch.setattr(feat_lib, "extract_features", interrupted)
    code, _, err = run_cli(capsys, *args)
    assert code == 130
    # Batches are fixed blocks of 2 consecutive files: the second holds cool/2.png and the
    # unreadable cool/broken.jpg, so two batches hold 3 images.
    assert "--resume" in err and "3 images are saved" in err
    assert not out.exists() and partial_path(out).is_dir()
    monkeypatch.setattr(feat_lib, "extract_features", real)
    code, _, err = run_cli(capsys, *args)  # without --resume: refused, nothing lost
    assert code == 2 and "--resume" in err
    assert_one_sentence(err)
    code, stdout, err = run_cli(capsys, *args, "--resume")
    assert code == 0, err
    assert "Resuming at image 4 of 7." in err  # two blocks of 2 files were done
    assert "6 images" in stdout and not partial_path(out).exists()


def test_features_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "f.safetensors"
    for args in (
        ["features", str(empty), "-m", "tiny", "-o", str(out)],
        ["features", str(tmp_path / "nope"), "-m", "tiny", "-o", str(out)],
        ["features", "digits", "-m", "tiny", "-l", "nolayer", "-o", str(out)],
        ["features", "digits", "-m", "tiny", "-o", str(tmp_path / "f.npz")],
        ["features", "digits", "-m", "tiny", "-o", str(tmp_path / "no" / "f.safetensors")],
    ):
        code, _, err = run_cli(capsys, *args)
        assert code == 2, err
        assert_one_sentence(err)
    assert not out.exists() and not partial_path(out).exists()


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan"])
def test_features_checkpoint_seconds_must_be_positive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    out = tmp_path / "f.safetensors"
    args = ["features", "digits", "-m", "tiny", "-o", str(out), "--checkpoint-seconds", value]
    code, _, err = run_cli(capsys, *args)
    assert code == 2, err
    assert "--checkpoint-seconds" in assert_one_sentence(err)
    assert not out.exists() and not partial_path(out).exists()


def test_neighbors_figure(
    tmp_path: Path, index: Path, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fig = tmp_path / "nb.png"
    query = str(folder / "warm" / "0.png")
    code, stdout, err = run_cli(
        capsys, "neighbors", "@0", query, "--index", str(index), "--k", "3", "--pixels",
        "--out", str(fig), "--metric", "cosine",
    )  # fmt: skip
    assert code == 0, err
    assert "2 queries × 3 neighbours" in stdout
    with Image.open(fig) as im:
        assert im.width > 4 * 112 and im.height > 4 * 112  # 4 rows (2 queries × 2 spaces)
    code, _, err = run_cli(
        capsys, "neighbors", "@5", "--index", str(index), "--k", "5", "-o", str(fig)
    )
    assert code == 0, err


def test_neighbors_bad_inputs(
    tmp_path: Path, index: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fig = tmp_path / "nb.png"
    other = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(3)}, str(other))
    notes = tmp_path / "notes.safetensors"
    notes.write_text("hello")
    cases = {
        "larger than the index": ["@0", "--index", str(index), "--k", "7"],
        "does not exist": ["@0", "--index", str(tmp_path / "missing.safetensors")],
        "not a convscope feature file": ["@0", "--index", str(other)],
        "not a safetensors": ["@0", "--index", str(notes)],
        "out of range": ["@6", "--index", str(index)],
        "@N": ["@x", "--index", str(index)],
        "neither a file nor a sample": ["no-such-image", "--index", str(index)],
        "no room": ["@0", "--index", str(index), "--k", "6"],
    }
    for needle, args in cases.items():
        k = [] if "--k" in args else ["--k", "2"]
        code, _, err = run_cli(capsys, "neighbors", *args, *k, "--out", str(fig))
        assert code == 2, (needle, err)
        assert_one_sentence(err)
        assert needle in err, (needle, err)
        assert not fig.exists()


def test_embed_pca_png_and_html(
    tmp_path: Path, index: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png, page = tmp_path / "map.png", tmp_path / "map.html"
    code, stdout, err = run_cli(
        capsys, "embed", str(index), "--method", "pca", "--out", str(png), "--html", str(page),
        "--size", "300", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "6 images, pca" in stdout
    assert png.is_file() and page.is_file()
    text = page.read_text()
    assert not re.search(r"https?://", text)
    m = re.search(r'id="convscope-map-data">(.*?)</script>', text)
    assert m is not None and json.loads(m.group(1))["n"] == 6
    code, _, err = run_cli(
        capsys, "embed", str(index), "--method", "tsne", "--grid", "--max-points", "5",
        "--out", str(png), "--size", "200", "--quiet",
    )  # fmt: skip
    assert code == 0, err


def test_embed_bad_inputs(
    tmp_path: Path, index: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    png = tmp_path / "map.png"
    other = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(3)}, str(other))
    for args in (
        [str(index), "--method", "isomap"],
        [str(tmp_path / "missing.safetensors")],
        [str(other)],
        [str(index), "--html", str(tmp_path / "map.txt")],
    ):
        code, _, err = run_cli(capsys, "embed", *args, "--out", str(png))
        assert code == 2, err
        assert_one_sentence(err)
    monkeypatch.setitem(sys.modules, "umap", None)  # as if umap-learn were not installed
    code, _, err = run_cli(capsys, "embed", str(index), "--method", "umap", "--out", str(png))
    assert code == 2
    assert_one_sentence(err)
    assert "pip install" in err and "umap-learn" in err
    assert not png.exists()


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in ("features", "neighbors", "embed"):
        code, out, _ = run_cli(capsys, cmd, "--help")
        assert code == 0 and "Usage" in out


# ---- under torchrun ----------------------------------------------------------------------------


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One thread, as each torchrun worker below has, so the arithmetic is the same."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _torchrun(*args: str, sleep: float = 0.0) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env["OMP_NUM_THREADS"] = "1"
    env["CONVSCOPE_TEST_SLEEP"] = str(sleep)  # for the slow model
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "convscope", *args, "--device", "cpu",
    ]  # fmt: skip
    return cmd, env


def _no_leftovers(folder: Path) -> None:
    assert not list(folder.glob("*.partial*")), list(folder.iterdir())
    assert not list(folder.rglob("*.tmp*"))


def test_two_process_torchrun_equals_single_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], one_torch_thread: None
) -> None:
    """Two gloo ranks write one file, byte for byte the single-process one: 23 files (two
    unreadable, one on each rank's share) in blocks of 4 give the ranks 3 blocks each."""
    root = tmp_path / "imgs"
    g = torch.Generator().manual_seed(5)
    for cls, count, broken in (("a", 12, "img05b.png"), ("b", 9, "img03b.png")):
        (root / cls).mkdir(parents=True)
        for i in range(count):
            arr = (torch.rand(10, 12, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(arr).save(root / cls / f"img{i:02d}.png")
        (root / cls / broken).write_bytes(b"not a png")  # dataset index 6 (rank 1), 17 (rank 0)
    args = [
        "features",
        str(root),
        "-m",
        "tiny",
        "-l",
        "conv1",
        "--pool",
        "max",
        "--batch-size",
        "4",
    ]
    single = tmp_path / "single.safetensors"
    code, _, err = run_cli(capsys, *args, "--out", str(single), "--quiet")
    assert code == 0, err
    multi = tmp_path / "multi.safetensors"
    cmd, env = _torchrun(*args, "--out", str(multi))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert multi.read_bytes() == single.read_bytes()
    wrote = [ln for ln in proc.stdout.splitlines() if ln.startswith("Wrote")]
    assert len(wrote) == 1 and "21 images × 4 features" in wrote[0] and "(2 skipped)" in wrote[0]
    _no_leftovers(tmp_path)


def _rank_done(out: Path, rank: int) -> int:
    try:
        state = json.loads((partial_path(out, rank=rank, world=2) / "state.json").read_text())
        return int(state["position"])
    except (OSError, ValueError, KeyError):
        return 0


def test_torchrun_killed_then_resumed_per_rank(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    one_torch_thread: None,
) -> None:
    """torchrun stopped (SIGTERM: it kills its workers, no handler runs in them) once both
    ranks have checkpointed; --resume continues each rank's folder and gives the same file."""
    args = ["features", "digits", "-m", SLOW, "-l", "act", "--batch-size", "16"]
    monkeypatch.setenv("CONVSCOPE_TEST_SLEEP", "0")
    single = tmp_path / "single.safetensors"
    code, _, err = run_cli(capsys, *args, "--out", str(single), "--quiet")
    assert code == 0, err
    out = tmp_path / "multi.safetensors"
    cmd, env = _torchrun(*args, "--out", str(out), "--checkpoint-seconds", "0.3", sleep=0.08)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not (_rank_done(out, 0) > 0 and _rank_done(out, 1) > 0):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no checkpoint from both ranks"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0 and not out.exists()
    saved = [_rank_done(out, r) for r in (0, 1)]
    assert all(0 < s < 901 for s in saved), saved
    cmd, env = _torchrun(*args, "--out", str(out), "--resume")
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming at image {saved[0]} of 901 of this rank's share." in resumed.stderr
    assert out.read_bytes() == single.read_bytes()
    _no_leftovers(tmp_path)
