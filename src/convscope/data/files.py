"""Atomic file writes: a reader never sees a half-written file, and a failed write leaves none."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from convscope.errors import UserInputError

__all__ = [
    "atomic_path",
    "atomic_paths",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_writable",
]


def _umask() -> int:
    """The process umask, read without changing it where /proc allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no other portable way to read it
    os.umask(mask)
    return mask


def check_writable(target: Path) -> None:
    """Raise a one-sentence error when `target` cannot be written at all: its folder is
    missing (convscope creates no folders for outputs) or not a folder, or it is a folder."""
    parent = target.parent
    if not parent.exists():
        raise UserInputError(f"Cannot write {target}: the folder {parent} does not exist.")
    if not parent.is_dir():
        raise UserInputError(f"Cannot write {target}: {parent} is not a folder.")
    if target.is_dir():
        raise UserInputError(f"Cannot write {target}: it is a folder.")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on failure it goes.

    The temporary name keeps the target's suffix (`.name.XXXX.tmp.png`), so writers that choose
    a format by suffix still work. On any exception, KeyboardInterrupt included, the temporary
    file is removed and the target is left as it was.
    """
    target = Path(path)
    check_writable(target)
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent
        )
    except PermissionError as exc:
        raise UserInputError(f"Cannot write {target}: permission denied.") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_paths(paths: Sequence[str | Path]) -> Iterator[list[Path]]:
    """`atomic_path` for several outputs at once: every target is checked before any file is
    made, the block writes each temporary path, and only when the whole block succeeds do
    they replace their targets (one rename each, back to back). On any failure no target
    changes, so a command with several outputs writes all of them or none."""
    targets = [Path(p) for p in paths]
    if len({t.resolve() for t in targets}) < len(targets):
        raise UserInputError("the output files must be different files.")
    for t in targets:
        check_writable(t)
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(atomic_path(t)) for t in targets]


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically and return the path."""
    target = Path(path)
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return target


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically and return the path."""
    return atomic_write_bytes(path, text.encode(encoding))
