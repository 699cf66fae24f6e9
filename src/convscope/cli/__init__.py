"""The `convscope` command line. Each command group lives in its own module."""

from convscope.cli import attribute, demo, evaluate, features, filters, patches, train, zoo  # noqa: F401
from convscope.cli.app import app, main, run

__all__ = ["app", "main", "run"]
