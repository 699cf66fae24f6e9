"""What the synthesis commands share: the recipe every PNG they write carries (so
`convscope reproduce` can run it again), `--dry-run`'s estimate, and their options.

The recipe is a JSON text chunk "convscope" in the PNG: the recipe's name, the full command
line (every option written out, defaults included, the output left out), the model and where
its weights came from, the seed, and the convscope and torch versions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from convscope.cli.common import console, out

if TYPE_CHECKING:
    from torch import Tensor

    from convscope.models import ConvModel
    from convscope.synthesize.optimize import StepEstimate

__all__ = [
    "RECIPE_KEY",
    "DryRunOpt",
    "ResumeOpt",
    "recipe_text",
    "recorded_command",
    "report_estimate",
    "save_synthesis",
    "state_path",
    "wrote",
]

RECIPE_KEY = "convscope"
"""The PNG text key that holds a synthesized image's recipe."""

NOT_RECORDED = ("out", "out_path", "dry_run", "quiet", "resume", "debug", "as_json")
"""Parameters a reproduction chooses itself (where to write, whether to show progress)."""

DryRunOpt = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Estimate the peak memory and the time per step on this device at this size "
        "(from two calibration steps), then exit without writing anything.",
    ),
]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue an interrupted run from its saved state (kept beside --out while it "
        "runs; the same command and options are needed).",
    ),
]


def _text(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def recorded_command(ctx: typer.Context, *, leave_out: Sequence[str] = NOT_RECORDED) -> list[str]:
    """The command line that runs this command again with the same values: its name, then
    every argument and option (defaults written out, so a later change of default cannot
    change the result), without the output and display options."""
    argv: list[str] = [str(ctx.info_name)]
    for param in ctx.command.params:
        name = str(param.name)
        if name in leave_out or name not in ctx.params:
            continue
        value = ctx.params[name]
        if param.param_type_name == "argument":
            values = value if isinstance(value, (list, tuple)) else [value]
            argv += [_text(v) for v in values if v is not None]
            continue
        flag = str(param.opts[0])
        if getattr(param, "is_flag", False):
            if value:
                argv.append(flag)
            elif param.secondary_opts:
                argv.append(str(param.secondary_opts[0]))
            continue
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            argv += [flag, _text(v)]
    return argv


def recipe_text(
    ctx: typer.Context,
    *,
    recipe: str,
    model: ConvModel | None,
    seed: int,
    extra: Mapping[str, Any] | None = None,
    leave_out: Sequence[str] = (),
) -> dict[str, str]:
    """The PNG text that records how an image was made (`model` None for a method that uses
    no network). `leave_out` names more parameters the recorded command drops (other
    outputs, which a reproduction must not overwrite)."""
    import torch

    from convscope import __version__

    payload = {
        "recipe": recipe,
        "command": recorded_command(ctx, leave_out=(*NOT_RECORDED, *leave_out)),
        "model": None if model is None else model.name,
        "weights": None if model is None else str(model.source),
        "seed": seed,
        "convscope": __version__,
        "torch": torch.__version__,
        **dict(extra or {}),
    }
    return {RECIPE_KEY: json.dumps(payload, sort_keys=True, default=str)}


def save_synthesis(image: Tensor | Any, path: Path, text: Mapping[str, str]) -> None:
    """Write a synthesized image (a tensor or Pillow image) with its recipe, atomically."""
    from convscope.data.images import save_png

    save_png(image, path, text=text)


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB"


def report_estimate(estimate: StepEstimate, *, steps: int, what: str, device: str) -> None:
    """Print `--dry-run`'s estimate (stdout): memory, time per step, and the whole run."""
    total = estimate.seconds_per_step * steps
    when = f"{total:.0f} s" if total < 120 else f"{total / 60:.1f} min"
    out.print(
        f"{what}: about {_mb(estimate.peak_bytes)} at the peak "
        f"({_mb(estimate.saved_bytes)} kept for the backward pass, {_mb(estimate.model_bytes)} "
        f"of model, {_mb(estimate.state_bytes)} of image and optimizer state); "
        f"{estimate.seconds_per_step * 1000:,.0f} ms per step on {device}, so {steps} steps "
        f"take about {when}.",
        markup=False,
        highlight=False,
    )


def state_path(out: Path) -> Path:
    """Where a run writing `out` keeps its state for `--resume` (removed when it finishes)."""
    return out.with_name(f".{out.name}.synthesis-state.safetensors")


def wrote(path: Path, detail: str = "") -> None:
    console.print(f"Wrote {path}{f' ({detail})' if detail else ''}.")
