"""safetensors writing (streamed and plain, deterministic, atomic) and the resumable chunk log."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from convscope.data.stream import ChunkLog, read_safetensors_header, save_tensors
from convscope.errors import UserInputError


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "b.weight": torch.randn(4, 3, 3, 3, generator=g),
        "a.bias": torch.randn(4, generator=g),
        "steps": torch.arange(5, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "half": torch.randn(3, generator=g).to(torch.bfloat16),
    }


def test_save_tensors_round_trips_with_metadata(tmp_path: Path) -> None:
    state = _state()
    out = tmp_path / "w.safetensors"
    assert save_tensors(state, out, {"source": "test", "a": "1"}) == out
    back = load_file(str(out))
    assert back.keys() == state.keys()
    for k, v in state.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v)
    with safe_open(str(out), framework="pt") as f:
        assert f.metadata() == {"source": "test", "a": "1"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


def test_numpy_arrays_too(tmp_path: Path) -> None:
    out = tmp_path / "n.safetensors"
    arrays = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "i": np.array([3, 1], np.int64)}
    save_tensors(arrays, out)
    with safe_open(str(out), framework="numpy") as f:
        assert np.array_equal(f.get_tensor("x"), arrays["x"])
        assert np.array_equal(f.get_tensor("i"), arrays["i"])


def test_the_same_content_gives_the_same_bytes(tmp_path: Path) -> None:
    """Metadata keys are sorted and tensors go in name order, whatever order they came in
    (the safetensors library's own writer orders metadata by a hash, run to run)."""
    state = _state()
    meta = {f"key{i}": str(i) for i in range(20)}
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_tensors(state, a, meta)
    save_tensors(dict(reversed(list(state.items()))), b, dict(reversed(list(meta.items()))))
    assert a.read_bytes() == b.read_bytes()
    header, _ = read_safetensors_header(a)
    assert list(header["__metadata__"]) == sorted(meta)


def test_missing_folder_and_failures_leave_no_trace(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        save_tensors(_state(), tmp_path / "missing" / "w.safetensors")
    assert not (tmp_path / "missing").exists()
    out = tmp_path / "w.safetensors"
    save_tensors(_state(), out)
    before = out.read_bytes()
    with pytest.raises(UserInputError, match="cannot be written"):
        save_tensors({"z": torch.zeros(2, dtype=torch.complex64)}, out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


def test_header_errors_are_one_sentence(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x05\x00")
    with pytest.raises(UserInputError, match="too short"):
        read_safetensors_header(bad, "feature file")
    with pytest.raises(UserInputError, match="does not exist"):
        read_safetensors_header(tmp_path / "nope.safetensors")


def test_chunk_log_commits_resumes_and_refuses_other_runs(tmp_path: Path) -> None:
    folder, out = tmp_path / "run.partial", tmp_path / "run.safetensors"
    log = ChunkLog.open(folder, {"model": "m"}, resume=False, out=out)
    log.commit({"x": np.arange(3, dtype=np.int64)}, position=3, extra={"note": "a"})
    log.commit(None, position=5)  # e.g. only unreadable images in this stretch
    log.commit({"x": np.arange(3, 5, dtype=np.int64)}, position=7, extra={"note": "b"})
    with pytest.raises(UserInputError, match="--resume"):
        ChunkLog.open(folder, {"model": "m"}, resume=False, out=out)
    again = ChunkLog.open(folder, {"model": "m"}, resume=True, out=out)
    assert (again.position, again.rows, again.extra) == (7, 5, {"note": "b"})
    assert np.concatenate(list(again.iter_chunks("x"))).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(UserInputError, match="used model 'm', not 'n'"):
        ChunkLog.open(folder, {"model": "n"}, resume=True, out=out)
    (folder / ChunkLog.STATE).write_text("{not json")
    with pytest.raises(UserInputError, match="damaged"):
        ChunkLog.open(folder, {"model": "m"}, resume=True, out=out)
    again.remove()
    assert not folder.exists()


def test_a_failed_commit_leaves_the_state_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "run.partial"
    log = ChunkLog.open(folder, {}, resume=False, out=tmp_path / "o")
    log.commit({"x": np.zeros(2)}, position=2)
    before = json.loads((folder / ChunkLog.STATE).read_text())

    def fail() -> None:
        raise OSError("disk full")

    monkeypatch.setattr(log, "_write_state", fail)
    with pytest.raises(OSError):
        log.commit({"x": np.zeros(3)}, position=5)
    assert (log.position, log.rows, len(log.chunks)) == (2, 2, 1)
    assert json.loads((folder / ChunkLog.STATE).read_text()) == before
