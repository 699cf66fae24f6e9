"""Errors convscope raises on purpose.

`UserInputError` and its subclasses mean "the input was wrong": the CLI turns them into one
sentence on stderr and exit code 2. Anything else is an internal error (exit code 1).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any

__all__ = [
    "ConvscopeError",
    "Interrupted",
    "UnknownNameError",
    "UserInputError",
    "WeightsUnavailableError",
    "check_number",
    "check_whole",
    "closest",
]


class ConvscopeError(Exception):
    """Base class of every error convscope raises on purpose."""


class UserInputError(ConvscopeError, ValueError):
    """The caller gave something unusable: a bad file, name, shape or argument value."""


class UnknownNameError(UserInputError, LookupError):
    """A model, layer, class or sample name that does not exist. The message names close ones."""

    def __init__(self, kind: str, name: str, choices: Iterable[str], *, hint: str = "") -> None:
        choices = list(choices)
        near = closest(name, choices)
        if near:
            tail = "did you mean " + ", ".join(repr(c) for c in near) + "?"
        elif len(choices) <= 12:
            tail = "valid names are " + ", ".join(repr(c) for c in choices) + "."
        else:
            tail = f"there are {len(choices)} valid names, e.g. " + ", ".join(
                repr(c) for c in choices[:8]
            )
            tail += "."
        msg = f"Unknown {kind} {name!r}; {tail}"
        if hint:
            msg += " " + hint
        super().__init__(msg)
        self.kind = kind
        self.name = name
        self.near = near


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what the user can do about it (`hint`, e.g. how to resume). It is a
    `KeyboardInterrupt`, so code that cleans up on Ctrl-C cleans up on it too; the CLI prints
    it as the one line "Interrupted: <hint>" and exits with 130."""

    def __init__(self, hint: str = "") -> None:
        super().__init__(hint)
        self.hint = hint


class WeightsUnavailableError(UserInputError):
    """The weights for a model cannot be had here (offline, package missing, bad file)."""


def closest(name: str, choices: Iterable[str], n: int = 5) -> list[str]:
    """The names in `choices` closest to `name`: case-insensitive prefix/substring hits first."""
    pool = list(dict.fromkeys(choices))
    low = name.lower()
    hits = [c for c in pool if c.lower() == low]
    hits += [c for c in pool if c not in hits and low and low in c.lower()][:n]
    lower = {c.lower(): c for c in pool}
    hits += [
        lower[m]
        for m in difflib.get_close_matches(low, list(lower), n=n, cutoff=0.6)
        if lower[m] not in hits
    ]
    return hits[:n]


def check_whole(value: Any, what: str, least: int = 1) -> int:
    """`value` if it is a whole number (not a bool) of at least `least`; else one sentence."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise UserInputError(f"{what} must be a whole number of at least {least}, got {value!r}.")
    return value


def check_number(value: Any, what: str, *, zero: bool = True) -> float:
    """`value` as a float if it is a finite number of 0 or more (above 0 unless `zero`)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not zero):
        need = "0 or more" if zero else "above 0"
        raise UserInputError(f"{what} must be a number {need}, got {value!r}.")
    return float(value)
