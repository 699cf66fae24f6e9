"""`convscope atlas`: a run and a run that finds everything done, bad input in one sentence,
and two torchrun ranks sharing the work to the same site as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from convscope.cli.testing import assert_one_sentence, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

SRC = Path(__file__).resolve().parents[2] / "src"
ARGS = [
    *("-m", "tiny", "--layers", "relu1,conv2", "--steps", "4", "--size", "16"),
    *("--diverse", "2", "--k", "3", "--neighbors", "3"),
]


def _site(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def test_writes_the_site_then_finds_it_done(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "atlas"
    args = ["atlas", "--dataset", str(images), *ARGS, "--out", str(out)]
    code, stdout, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "Wrote" in stdout and "6 channels of 2 layers" in stdout and "0 reused" in stdout
    assert "atlas" in err  # the progress bar
    code, stdout, err = run_cli(capsys, *args, "--quiet")
    assert code == 0 and stdout == "" and err == ""
    code, stdout, _ = run_cli(capsys, *args)
    assert code == 0 and "0 jobs computed, 20 reused" in stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-m", "nosuchnet"], "nosuchnet"),
        (["--layers", "relu9"], "relu9"),
        (["--layers", " , "], "names no layer"),
        (["--channels", "0-9"], "out of range"),
        (["--steps", "0"], "--steps"),
        (["--size", "8"], "--size"),
        (["--diverse", "1"], "at least 2"),
        (["--diversity", "nan"], "--diversity"),
        (["--perplexity", "inf"], "--perplexity"),
        (["--k", "99"], "larger than the dataset"),
        (["--dataset", "nowhere/at/all"], "does not exist"),
        (["--map-method", "mds"], "--map-method"),
    ],
)
def test_bad_input_is_one_sentence_and_writes_nothing(
    images: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    out = tmp_path / "atlas"
    code, _, err = run_cli(
        capsys, "atlas", "--dataset", str(images), *ARGS, *extra, "--out", str(out), "--quiet"
    )
    assert code == 2, err
    assert message in assert_one_sentence(err)
    assert not out.exists()


def test_two_torchrun_ranks_share_the_work_and_write_the_same_site(
    images: Path, built: Path, tmp_path: Path, kit: Any
) -> None:
    """The same site, byte for byte, as one process builds (`built`, with the same settings):
    the dataset passes are sharded, the other jobs dealt out, and rank 0 writes the pages."""
    out = tmp_path / "atlas"
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "convscope", "atlas", "--dataset", str(images), *ARGS, "--out", str(out),
        "--device", "cpu",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [ln for ln in proc.stdout.splitlines() if ln.startswith("Wrote")] == [
        f"Wrote {out / 'index.html'} (6 channels of 2 layers; 13 jobs computed, 0 reused)."
    ]  # rank 0 alone reports: its share is the 5 dataset passes and 8 of the 15 other jobs
    ranks = [json.loads(p.read_text()).get("rank") for p in (out / ".jobs").iterdir()]
    assert {r for r in ranks if r is not None} == {0, 1}
    assert _site(out) == _site(built)
    assert not list((out / ".partial").iterdir()) and not list(out.rglob("*.safetensors.partial*"))


def test_the_options_take_their_defaults_from_the_library() -> None:
    import inspect

    import convscope.cli.root  # noqa: F401  (registers every command)
    from convscope.atlas import build_atlas
    from convscope.cli.common import LIBRARY_DEFAULTS

    signature = inspect.signature(build_atlas).parameters
    read = {p: v for t, p, v in LIBRARY_DEFAULTS if t == "convscope.atlas.build:build_atlas"}
    assert len(read) == 12
    assert all(signature[p].default == v for p, v in read.items())
