"""`convscope train-small`: a loadable checkpoint with metadata, and clean failures."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image

from convscope.cli import app
from convscope.cli.testing import assert_one_sentence, run_cli
from convscope.models import load_model
from convscope.models.smallnet import checkpoint_metadata
from convscope.models.train_small import train_small

pytestmark = pytest.mark.usefixtures("one_thread")


def test_train_small_writes_a_loadable_checkpoint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "nets").mkdir()  # convscope creates no folders for outputs
    target = tmp_path / "nets" / "net.safetensors"
    code, out, err = run_cli(
        capsys, "train-small", "--dataset", "digits", "--out", str(target),
        "--epochs", "1", "--limit", "200", "--seed", "3",
    )  # fmt: skip
    assert code == 0, err
    assert "test accuracy:" in out and str(target) in out
    assert "train" in err  # the progress bar
    meta = checkpoint_metadata(target)
    assert meta["dataset"] == "digits" and meta["epochs"] == "1" and meta["seed"] == "3"
    assert meta["limit"] == "200" and 0.0 <= float(meta["test_accuracy"]) <= 1.0
    assert meta["command"].startswith(f"convscope train-small --dataset digits --out {target} ")
    assert "--limit 200" in meta["command"] and "--threads 1" in meta["command"]
    assert [p.name for p in target.parent.iterdir()] == ["net.safetensors"]  # no temp files
    cm = load_model("smallnet", weights=str(target))
    assert cm.source.kind == "file" and cm.classes == tuple(str(d) for d in range(10))

    digit = tmp_path / "digit.png"
    code, out, _ = run_cli(
        capsys, "classify", "coffee", "--model", "smallnet", "--weights", str(target), "--json"
    )
    assert code == 0 and len(json.loads(out)[0]["predictions"]) == 5
    from convscope.data.datasets import digits

    ds = digits()
    gray = (ds.images[0] / 16.0 * 255).round().astype(np.uint8)  # a "0"
    Image.fromarray(gray, mode="L").save(digit)
    code, out, _ = run_cli(capsys, "classify", str(digit), "--model", "smallnet", "--json")
    assert code == 0 and json.loads(out)[0]["predictions"][0]["name"] == "0"


def test_defaults_come_from_train_small() -> None:
    command = typer.main.get_command(app).commands["train-small"]  # type: ignore[attr-defined]
    defaults = {p.name: p.default for p in command.params}
    signature = inspect.signature(train_small).parameters
    names = ("dataset", "epochs", "batch_size", "lr", "seed", "test_fraction", "limit", "shift")
    for name in (*names, "threads"):
        assert defaults[name] == signature[name].default, name


def test_interrupt_leaves_no_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import convscope.models.train_small as train_lib

    def interrupted(*_a: object, **_k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(train_lib, "train_small", interrupted)
    target = tmp_path / "net.safetensors"
    code, _, err = run_cli(capsys, "train-small", "--out", str(target), "--quiet")
    assert code == 130 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


BAD = {
    "unknown dataset": ["--dataset", "digts"],
    "folder dataset": ["--dataset", "/tmp"],
    "zero epochs": ["--epochs", "0"],
    "bad test fraction": ["--test-fraction", "1.5"],
    "zero lr": ["--lr", "0"],
    "tiny limit": ["--limit", "1"],
    "missing fashion-mnist": ["--dataset", "fashion-mnist"],
    "output is a folder": ["--out", "."],
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_with_one_sentence_and_no_file(
    case: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONVSCOPE_FASHION_MNIST_DIR", str(tmp_path / "no-fashion"))
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "net.safetensors"
    code, _, err = run_cli(capsys, "train-small", "--out", str(target), "--quiet", *BAD[case])
    assert code == 2, err
    assert_one_sentence(err)
    assert list(tmp_path.iterdir()) == []
    if case == "missing fashion-mnist":
        assert "apt-get install dataset-fashion-mnist" in err
