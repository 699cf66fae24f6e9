"""Helpers for testing the command line in-process (for convscope's tests and the CLI's own
users); the library never imports this module."""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["assert_one_sentence", "run_cli"]


class _Capture(Protocol):
    """What `run_cli` needs of pytest's `capsys` fixture."""

    def readouterr(self) -> Any: ...


def run_cli(capture: _Capture, *args: str) -> tuple[int, str, str]:
    """Run `convscope ARGS...` in-process: (exit code, stdout, stderr), read through a pytest
    capture fixture (`capsys`)."""
    from convscope.cli import main

    code = main(list(args))
    cap = capture.readouterr()
    return code, str(cap.out), str(cap.err)


def assert_one_sentence(err: str) -> str:
    """Assert that `err` is the CLI's bad-input report: one line, "Error: ..." ending like a
    sentence, no traceback. Returns the line."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("Error: ") and lines[0].rstrip().endswith((".", "?", ")")), err
    return lines[0]
