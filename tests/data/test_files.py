"""Atomic writes: the target appears whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from convscope.data.files import atomic_path, atomic_write_bytes, atomic_write_text
from convscope.errors import UserInputError


def test_write_bytes_and_text(tmp_path: Path) -> None:
    out = atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    assert out == tmp_path / "a.bin"
    assert out.read_bytes() == b"\x00\x01"
    atomic_write_text(tmp_path / "b.txt", "héllo ✓")
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "héllo ✓"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.txt"]


def test_overwrite_replaces(tmp_path: Path) -> None:
    target = tmp_path / "x.txt"
    target.write_text("old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert list(tmp_path.iterdir()) == [target]


def test_temp_path_keeps_suffix_and_folder(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "out.png") as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(".out.png.")
        assert tmp.name.endswith(".tmp.png")
        assert tmp.suffix == ".png"
        tmp.write_bytes(b"data")
        assert not (tmp_path / "out.png").exists()
    assert (tmp_path / "out.png").read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_exception_leaves_nothing(tmp_path: Path, exc: BaseException) -> None:
    with pytest.raises(type(exc)), atomic_path(tmp_path / "out.png") as tmp:
        tmp.write_bytes(b"half")
        raise exc
    assert list(tmp_path.iterdir()) == []


def test_exception_keeps_old_target(tmp_path: Path) -> None:
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(ValueError), atomic_path(target) as tmp:
        tmp.write_text("new")
        raise ValueError
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_missing_parent(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        atomic_write_bytes(tmp_path / "nope" / "a.bin", b"")
    assert not (tmp_path / "nope").exists()


def test_target_is_folder(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(UserInputError, match="is a folder"):
        atomic_write_text(tmp_path / "d", "x")


def test_parent_is_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserInputError, match="not a folder"):
        atomic_write_text(tmp_path / "f" / "a.txt", "x")


def test_mode_follows_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        out = atomic_write_text(tmp_path / "m.txt", "x")
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o640
