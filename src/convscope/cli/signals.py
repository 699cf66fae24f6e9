"""Ctrl-C that is safe at any moment of a command line's life.

A KeyboardInterrupt is not safe everywhere: landing in torch's C++ start-up it aborts the
process ("terminate called after throwing ... error_already_set"), raised from a Python
callback that C++ code called it can end in "terminate called without an active exception",
Python turns one inside a class body's `__set_name__` into a RuntimeError, and some
import-time code swallows it. So the console script (`install()`) handles SIGINT itself:

- while a command sets up (`hold()`: imports, loading the model and the data) Ctrl-C is held,
  and raised at the first safe point: the command's first progress event (`release()`, called
  by the progress bars, where the library is between two units of work) or the end of the
  set-up, whichever comes first;
- after that it raises at once, as usual, except inside an import, where it is held and raised
  as soon as the import is over (checked every 50 ms);
- a second Ctrl-C while one is held raises at once;
- `ignore()`: once the work is done and the process exits, Ctrl-C changes nothing.

`exit_cleanly()` undoes a CPython 3.11 quirk before exiting after a Ctrl-C: a
KeyboardInterrupt raised inside `exec`/`eval` of a string (dataclasses, namedtuple and typing
do that while torch and friends import) sets a flag that makes the interpreter, even after the
exception was handled, kill itself with SIGINT when it exits (status −2, not 130). Executing
any string resets it.

Nothing changes where `install()` was not called (the library, tests calling `main`).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

__all__ = ["exit_cleanly", "hold", "ignore", "install", "release"]

_RETRY = 0.05  # seconds between checks whether a held Ctrl-C can be raised
_installed = False
_holding = 0  # nesting depth of `hold()` blocks still holding
_pending = False


def _importing(frame: FrameType | None) -> bool:
    """Whether `frame` (or a caller of it) is inside an import."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _raise() -> None:
    global _pending
    _pending = False
    raise KeyboardInterrupt


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _pending
    if _pending:
        _raise()  # a second Ctrl-C: the user insists
    if _holding:
        _pending = True  # raised by `release()` or at the end of the hold
        return
    if _importing(frame):
        _pending = True
        signal.setitimer(signal.ITIMER_REAL, _RETRY)
        return
    _raise()


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    if not _pending or _holding:
        return
    if _importing(frame):
        signal.setitimer(signal.ITIMER_REAL, _RETRY)
        return
    _raise()


def install() -> None:
    """Handle SIGINT as the module docstring says (the main thread of the console script
    only, and only where Python's default handlers are in place)."""
    global _installed
    with contextlib.suppress(ValueError, AttributeError):  # not the main thread; no SIGALRM
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler and signal.getsignal(
            signal.SIGALRM
        ) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGALRM, _on_alarm)
            signal.signal(signal.SIGINT, _on_sigint)
            _installed = True


@contextlib.contextmanager
def hold() -> Iterator[None]:
    """Hold Ctrl-C inside the block until `release()` or its end (see the docstring)."""
    global _holding
    if not _installed:
        yield
        return
    _holding += 1
    try:
        yield
    finally:
        _holding = max(0, _holding - 1)
    if _pending and not _holding:
        _raise()


def release() -> None:
    """A safe point: the set-up is over; a held Ctrl-C is raised here, later ones at once."""
    global _holding
    if not _installed:
        return
    _holding = 0
    if _pending:
        _raise()


def ignore() -> None:
    """Ctrl-C does nothing from now on (the work is done; the process is exiting)."""
    global _pending
    _pending = False
    with contextlib.suppress(ValueError, AttributeError):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def exit_cleanly() -> None:
    """Reset CPython's "exit by SIGINT" flag after a handled Ctrl-C (see the docstring)."""
    exec("")
