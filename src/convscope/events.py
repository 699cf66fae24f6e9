"""Typed progress events. The core never prints: long jobs call `on_progress(Progress(...))`,
which the CLI renders as a progress bar, the web app as live updates, and tests inspect."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["Progress", "ProgressCallback", "no_progress"]


@dataclass(frozen=True)
class Progress:
    task: str  # what is running, e.g. "features", "top-patches", "train"
    done: int  # units finished so far (images, steps, epochs)
    total: int | None  # None when unknown
    unit: str = "images"
    message: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)

    @property
    def fraction(self) -> float | None:
        return None if not self.total else self.done / self.total


ProgressCallback = Callable[[Progress], None]


def no_progress(_event: Progress) -> None:
    """The default callback: ignore events."""
