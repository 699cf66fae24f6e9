"""The typer application and the error policy: exit 2 for bad input, 1 for internal errors."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence

import typer
from typer.exceptions import TyperException

from convscope.errors import UserInputError

app = typer.Typer(
    name="convscope",
    help="See inside convolutional networks and make images with them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of internal errors."),
) -> None:
    """convscope: inspect, attribute and synthesize with convolutional networks."""


def _say(text: str) -> None:
    """One line on stderr, never wrapped (a terminal wraps it, not us)."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _one_line(text: str) -> str:
    return " ".join(text.strip().split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point. Returns (and, as a script, exits with) the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:  # accepted anywhere on the line, not only before the command
        args = [a for a in args if a != "--debug"]
    command = typer.main.get_command(app)
    try:
        rv = command.main(args, prog_name="convscope", standalone_mode=False)
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
    except typer.Abort:
        _say("Aborted.")
        return 130
    except KeyboardInterrupt:
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


def run() -> None:
    sys.exit(main())
