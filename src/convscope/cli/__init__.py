"""The `convscope` command line. Each command group lives in its own module."""

from convscope.cli import demo, zoo  # noqa: F401  (registers the commands)
from convscope.cli.app import app, main, run

__all__ = ["app", "main", "run"]
