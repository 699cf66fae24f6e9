"""The command line's entry: every command module, and the error policy (exit 2 with one
sentence for bad input, 130 for Ctrl-C, 1 for internal errors)."""

from __future__ import annotations

import functools
import math
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import typer
from typer.exceptions import TyperException

from convscope.cli import signals
from convscope.cli.application import app

# Importing a command module registers its commands, in this order in `--help`.
# isort: off
from convscope.cli import zoo  # noqa: F401
from convscope.cli import filters  # noqa: F401
from convscope.cli import features  # noqa: F401
from convscope.cli import patches  # noqa: F401
from convscope.cli import train  # noqa: F401
from convscope.cli import attribute  # noqa: F401
from convscope.cli import evaluate  # noqa: F401
from convscope.cli import visualize  # noqa: F401
from convscope.cli import adversarial  # noqa: F401
from convscope.cli import invert  # noqa: F401
from convscope.cli import dream  # noqa: F401
from convscope.cli import texture  # noqa: F401
from convscope.cli import style  # noqa: F401
from convscope.cli import stylenet  # noqa: F401
from convscope.cli import atlas  # noqa: F401
from convscope.cli import reproduce  # noqa: F401
from convscope.cli import demo  # noqa: F401
from convscope.cli import serve  # noqa: F401

# isort: on
from convscope.errors import Interrupted, UserInputError

__all__ = ["app", "command", "main"]


def _say(text: str) -> None:
    """One line on stderr, never wrapped (a terminal wraps it, not us)."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _one_line(text: str) -> str:
    return " ".join(text.strip().split())


def _finite_callback(original: Callable[..., Any] | None) -> Callable[..., Any]:
    def check(ctx: Any, param: Any, value: Any) -> Any:
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise typer.BadParameter(f"{v} is not a finite number.", ctx=ctx, param=param)
        return value if original is None else original(ctx, param, value)

    return check


class _CommandInterrupted(Exception):
    """Ctrl-C inside a command, carried past click (which would print an empty line and turn
    it into an Abort) to `main`, which prints the one line."""

    def __init__(self, hint: str) -> None:
        super().__init__(hint)
        self.hint = hint


def _interruptible(callback: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            with signals.hold():  # Ctrl-C waits for a safe point: the first progress event
                return callback(*args, **kwargs)
        except KeyboardInterrupt as exc:
            raise _CommandInterrupted(exc.hint if isinstance(exc, Interrupted) else "") from None

    return run


def _prepare(cmd: Any) -> None:
    """The rules every command follows, applied in one place so a new command cannot forget
    them: each float parameter refuses inf and nan like any other bad value (every value is
    checked after conversion; only float parameters convert to floats), and Ctrl-C inside a
    command reaches `main` as one line."""
    for param in cmd.params:
        param.callback = _finite_callback(param.callback)
    if getattr(cmd, "callback", None) is not None:
        cmd.callback = _interruptible(cmd.callback)
    for sub in getattr(cmd, "commands", {}).values():
        _prepare(sub)


_COMMAND: Any = None


def command() -> Any:
    """The click command tree of the whole CLI (built once)."""
    global _COMMAND
    if _COMMAND is None:
        _COMMAND = typer.main.get_command(app)
        _prepare(_COMMAND)
    return _COMMAND


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point. Returns (and, as a script, exits with) the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:  # accepted anywhere on the line, not only before the command
        args = [a for a in args if a != "--debug"]
    try:
        rv = command().main(args, prog_name="convscope", standalone_mode=False)
    except UserInputError as exc:
        _say(f"Error: {_one_line(str(exc))}")
        return 2
    except TyperException as exc:
        code = int(getattr(exc, "exit_code", 2))
        msg = _one_line(exc.format_message())
        if type(exc).__name__ == "NoArgsIsHelpError":
            _say(exc.format_message())
            return 2
        _say(f"Error: {msg} (see --help)")
        return code
    except _CommandInterrupted as exc:
        _say(f"Interrupted: {exc.hint}" if exc.hint else "Interrupted.")
        return 130
    except (typer.Abort, KeyboardInterrupt):
        _say("Interrupted.")
        return 130
    except Exception as exc:
        if debug:
            traceback.print_exc()
        _say(
            f"Internal error: {exc.__class__.__name__}: {_one_line(str(exc))[:300]} "
            "(re-run with --debug for the traceback)."
        )
        return 1
    code = int(rv) if isinstance(rv, int) else 0
    if code == 130:  # typer turns Ctrl-C into exit code 130 without a word
        _say("Interrupted.")
    return code
