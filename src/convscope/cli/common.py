"""Shared CLI plumbing: options whose defaults come from the library, console, seeding."""

from __future__ import annotations

import contextlib
import inspect
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from convscope.data.files import atomic_write_text
from convscope.data.images import DEFAULT_MAX_PIXELS
from convscope.events import Progress as ProgressEvent
from convscope.events import ProgressCallback
from convscope.models import ConvModel, load_model

__all__ = [
    "DebugOpt",
    "DeviceOpt",
    "MaxPixelsOpt",
    "ModelOpt",
    "QuietOpt",
    "SeedOpt",
    "WeightsOpt",
    "console",
    "default_of",
    "open_model",
    "progress_bar",
    "write_json",
]

console = Console(stderr=True, highlight=False)
out = Console(highlight=False, soft_wrap=True)


def default_of(func: Callable[..., Any], param: str) -> Any:
    """The library's default for `param` of `func`, so the CLI never restates it."""
    return inspect.signature(func).parameters[param].default


ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Registry name (see `convscope models`), file.py:factory, package.module:attr, "
        "or a TorchScript file.",
    ),
]
WeightsOpt = Annotated[
    str | None,
    typer.Option(
        "--weights",
        help="DEFAULT (torchvision download), random, or a local state-dict file "
        "(.safetensors, or a torch file read with weights_only). Default: the model's own.",
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
DebugOpt = Annotated[
    bool, typer.Option("--debug", help="Show the full traceback of internal errors.")
]
MaxPixelsOpt = Annotated[
    int,
    typer.Option(
        "--max-pixels",
        min=1,
        help="Refuse images with more pixels than this (a decompression-bomb guard).",
    ),
]
MAX_PIXELS_DEFAULT = DEFAULT_MAX_PIXELS


def open_model(model: str, weights: str | None, device: str, seed: int | None = None) -> ConvModel:
    if seed is not None:
        torch.manual_seed(seed)
    return load_model(model, weights=weights, device=device)


def write_json(data: Any, path: Path | None) -> None:
    text = json.dumps(data, indent=2)
    if path is None:
        out.print(text, markup=False, highlight=False)
    else:
        atomic_write_text(path, text + "\n")


@contextlib.contextmanager
def progress_bar(quiet: bool = False) -> Iterator[ProgressCallback]:
    """A callback that renders the library's `Progress` events as bars with ETA (on stderr)."""
    bars = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        disable=quiet,
        transient=False,
    )
    tasks: dict[str, TaskID] = {}

    def on_progress(event: ProgressEvent) -> None:
        info = event.message
        if event.metrics:
            info = " ".join([info, *(f"{k}={v:.4g}" for k, v in event.metrics.items())]).strip()
        if event.task not in tasks:
            tasks[event.task] = bars.add_task(
                event.task, total=event.total, unit=event.unit, info=info
            )
        bars.update(tasks[event.task], completed=event.done, total=event.total, info=info)

    with bars:
        yield on_progress
