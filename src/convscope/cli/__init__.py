"""The `convscope` command line. Each command group lives in its own module; `root` puts
them together. `run()` is the console script: Ctrl-C at any moment, even while the command
modules and torch are still importing, ends with the one line "Interrupted." (exit 130)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from convscope._lazy import lazy_exports

if TYPE_CHECKING:
    from convscope.cli.root import app, main

__all__ = ["app", "main", "run"]

__getattr__, __dir__ = lazy_exports(
    __name__, globals(), {"app": "convscope.cli.root", "main": "convscope.cli.root"}
)


def run() -> None:
    """`convscope ...` and `python -m convscope ...`."""
    from convscope.cli import signals

    signals.install()
    try:
        with signals.hold():
            from convscope.cli.root import main
        code = main()
    except KeyboardInterrupt:  # before `main` could catch it: during the imports
        sys.stderr.write("Interrupted.\n")
        code = 130
    signals.ignore()  # done: a Ctrl-C while the interpreter shuts down changes nothing
    if code == 130:
        signals.exit_cleanly()
    sys.exit(code)
