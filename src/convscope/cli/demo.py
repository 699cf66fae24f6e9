"""`convscope demo`: the main job on the offline defaults, written as an HTML gallery (the
sections live in `convscope.gallery`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from convscope.cli.application import app
from convscope.cli.common import ProgressBars, console, out
from convscope.cli.options import DeviceOpt, QuietOpt, SeedOpt
from convscope.errors import UserInputError
from convscope.events import Progress


@app.command("demo")
def demo_cmd(
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="Folder to write index.html and PNGs into.")
    ] = Path("convscope-demo"),
    sections: Annotated[
        str | None,
        typer.Option(
            "--sections", help="Only these sections, comma-separated (see --list). Default: all."
        ),
    ] = None,
    list_sections: Annotated[
        bool, typer.Option("--list", help="List the sections and exit.")
    ] = False,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Run the main job on the offline defaults: a gallery of what convscope can do, one
    section per capability, with each section's wall time on the page."""
    from convscope.gallery import SECTIONS, DemoContext, build, choose_sections

    if list_sections:
        for spec in SECTIONS:
            out.print(f"{spec.name:<28} {spec.summary}", markup=False, highlight=False)
        return
    chosen = choose_sections(sections)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserInputError(f"--out {out_dir} exists and is not a folder.")
    if not out_dir.parent.is_dir():
        raise UserInputError(
            f"Cannot write into {out_dir}: the folder {out_dir.parent} does not exist."
        )
    import torch

    out_dir.mkdir(exist_ok=True)
    torch.manual_seed(seed)
    with ProgressBars(quiet) as bars:

        def on_progress(event: Progress) -> None:
            if event.task == "demo":
                bars.clear(keep=["demo"])  # a new section: only the overall bar stays
            bars(event)

        ctx = DemoContext(out=out_dir, device=device, on_progress=on_progress)
        page, elapsed = build(ctx, chosen)
    if not quiet:
        console.print(f"Wrote {page} in {elapsed:.0f} s.")
