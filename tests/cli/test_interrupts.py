"""Real signals on real processes: `kill -9` after a time-based checkpoint, then --resume, and
Ctrl-C (SIGINT) early (while torch imports) and late (mid-run), for `features` and
`top-patches`.

Nothing here asserts a duration: each test polls the state files a run leaves on disk, with
generous time limits, and the slow model (tests/cli/slow_model.py) only makes the runs last
long enough to be interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from convscope.cli.patches import state_path
from convscope.data.stream import read_safetensors_header
from convscope.inspect.features import partial_path

SRC = Path(__file__).resolve().parents[2] / "src"
SLOW = f"{Path(__file__).with_name('slow_model.py')}:slow_tiny"
SLEEP = 0.05  # seconds per forward of the slow model: ~6 s for each run below
WAIT = 180.0  # the most any poll waits, generous for a loaded 2-core machine

FEATURES = [
    "features", "digits", "--model", SLOW, "--layer", "act", "--batch-size", "16",
    "--checkpoint-seconds", "0.3", "--device", "cpu",
]  # fmt: skip
TOP_PATCHES = [
    "top-patches", "digits", "--model", SLOW, "--layer", "relu1", "--k", "3", "--channels",
    "all", "--batch-size", "8", "--limit", "800", "--checkpoint-seconds", "0.3",
    "--device", "cpu",
]  # fmt: skip


def _env(sleep: float) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env["OMP_NUM_THREADS"] = "1"  # the same arithmetic in every run, and kind to shared cores
    env["CONVSCOPE_TEST_SLEEP"] = str(sleep)
    return env


@pytest.fixture(autouse=True)
def _interruptible_children() -> Iterator[None]:
    """Children that Ctrl-C reaches, as in a terminal. Under a shell's background job (`cmd
    &`, as some CI runners start the tests) SIGINT is ignored, and an ignored signal stays
    ignored across exec, so the CLI would rightly keep ignoring it; a handled one is reset to
    the default in the child."""
    before = signal.getsignal(signal.SIGINT)
    if before is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def _start(args: list[str], *, sleep: float = SLEEP) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "convscope", *args]
    return subprocess.Popen(
        cmd, env=_env(sleep), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _run(args: list[str], *, sleep: float = 0.0) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "convscope", *args]
    return subprocess.run(cmd, env=_env(sleep), capture_output=True, text=True, timeout=600)


def _wait_for(what: str, ready: Callable[[], bool], proc: subprocess.Popen[str]) -> None:
    """Poll until `ready()`; fail if the run ends first or nothing happens for WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while not ready():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}: {err[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.communicate()
            pytest.fail(f"no {what} after {WAIT:.0f} s")
        time.sleep(0.05)


def _features_done(out: Path) -> int:
    """Images committed to the partial folder of a `features` run into `out`."""
    try:
        return int(json.loads((partial_path(out) / "state.json").read_text())["position"])
    except (OSError, ValueError, KeyError):
        return 0


def _scan_done(out: Path) -> int:
    """Images in the saved state of a `top-patches` run into `out`."""
    try:
        header, _ = read_safetensors_header(state_path(out, 0, 1))
        return int(header["__metadata__"]["position"])
    except Exception:  # not there yet
        return 0


def _lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.strip()]


def _temporaries(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.tmp*"))


def test_kill_9_then_resume_features(tmp_path: Path) -> None:
    ref = tmp_path / "ref.safetensors"
    done = _run([*FEATURES, "--out", str(ref), "--quiet"])
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "f.safetensors"
    proc = _start([*FEATURES, "--out", str(out), "--quiet"])
    _wait_for("a checkpoint", lambda: _features_done(out) > 0, proc)
    proc.kill()  # SIGKILL: no handler runs, only what the last checkpoint committed survives
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    saved = _features_done(out)
    assert 0 < saved < 1797
    resumed = _run([*FEATURES, "--out", str(out), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming at image {saved} of 1797." in resumed.stderr
    assert "Traceback" not in resumed.stderr
    assert "1797 images × 2 features" in resumed.stdout
    assert out.read_bytes() == ref.read_bytes()
    assert not partial_path(out).exists()
    assert _temporaries(tmp_path) == []


def test_kill_9_then_resume_top_patches(tmp_path: Path) -> None:
    ref_png, ref_table = tmp_path / "ref.png", tmp_path / "ref.safetensors"
    done = _run([*TOP_PATCHES, "--out", str(ref_png), "--save-topk", str(ref_table), "--quiet"])
    assert done.returncode == 0, done.stderr[-3000:]
    png, table = tmp_path / "top.png", tmp_path / "top.safetensors"
    args = [*TOP_PATCHES, "--out", str(png), "--save-topk", str(table)]
    proc = _start([*args, "--quiet"])
    _wait_for("a checkpoint", lambda: _scan_done(png) > 0, proc)
    proc.kill()
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not png.exists() and not table.exists()
    saved = _scan_done(png)
    assert 0 < saved < 800
    resumed = _run([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming at image {saved} of 800." in resumed.stderr
    assert "Traceback" not in resumed.stderr
    assert png.read_bytes() == ref_png.read_bytes()
    assert table.read_bytes() == ref_table.read_bytes()
    assert not state_path(png, 0, 1).exists()
    assert _temporaries(tmp_path) == []


COMMANDS = {"features": (FEATURES, ".safetensors"), "top-patches": (TOP_PATCHES, ".png")}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_ctrl_c_early_while_importing(tmp_path: Path, command: str) -> None:
    base, suffix = COMMANDS[command]
    out = tmp_path / f"out{suffix}"
    # Ctrl-C while the CLI and torch import, and while the model and data load: every time
    # exactly one line (the console script holds it until a safe point; see cli/signals.py).
    for k, delay in enumerate((0.2, 0.5, 1.0)):
        out = tmp_path / f"out{k}{suffix}"
        proc = _start([*base, "--out", str(out)])
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=WAIT)
        assert "Traceback" not in err, err[-3000:]
        assert proc.returncode == 130, (delay, proc.returncode, err[-3000:])
        lines = _lines(err)
        assert len(lines) == 1 and lines[0].startswith("Interrupted"), (delay, err)
        assert not out.exists()
        assert _temporaries(tmp_path) == []


@pytest.mark.parametrize("command", list(COMMANDS))
def test_ctrl_c_late_mid_run(tmp_path: Path, command: str) -> None:
    base, suffix = COMMANDS[command]
    out = tmp_path / f"out{suffix}"
    progress = _features_done if command == "features" else _scan_done
    proc = _start([*base, "--out", str(out)])  # with the progress bar (not --quiet)
    _wait_for("a checkpoint", lambda: progress(out) > 0, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 130, (proc.returncode, err[-3000:])
    assert "Traceback" not in err
    lines = _lines(err)
    assert len(lines) == 1, err
    assert lines[0].startswith("Interrupted: ") and "--resume" in lines[0], err
    assert not out.exists()
    assert progress(out) > 0  # the resumable state is kept
    assert _temporaries(tmp_path) == []
