"""The typer application that every command module adds its commands to."""

from __future__ import annotations

import typer

__all__ = ["app"]

app = typer.Typer(
    name="convscope",
    help="See inside convolutional networks and make images with them.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of internal errors."),
) -> None:
    """convscope: inspect, attribute and synthesize with convolutional networks."""
