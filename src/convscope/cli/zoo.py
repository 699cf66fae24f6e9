"""`convscope models`, `layers` and `classify`."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from convscope.cli.app import app
from convscope.cli.common import (
    MAX_PIXELS_DEFAULT,
    DeviceOpt,
    MaxPixelsOpt,
    ModelOpt,
    QuietOpt,
    SeedOpt,
    WeightsOpt,
    default_of,
    open_model,
    out,
    write_json,
)
from convscope.data.samples import load_image_or_sample
from convscope.errors import WeightsUnavailableError
from convscope.models import ConvModel, load_model, model_entries
from convscope.probe import layers as list_layers

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@app.command("models")
def models_cmd(as_json: JsonOpt = False) -> None:
    """List the models, whether their weights are available offline, and their source."""
    rows = []
    for e in model_entries():
        need = e.availability()
        rows.append(
            {
                "name": e.name,
                "offline": need is None,
                "how": need or "",
                "source": e.source,
                "description": e.description,
            }
        )
    if as_json:
        write_json(rows, None)
        return
    table = Table(title="convscope models")
    for col in ("name", "offline", "source", "description"):
        table.add_column(col)
    for r in rows:
        offline = "[green]yes[/]" if r["offline"] else f"[yellow]no[/] ({r['how']})"
        table.add_row(str(r["name"]), offline, str(r["source"]), str(r["description"]))
    out.print(table)


@app.command("layers")
def layers_cmd(
    model: Annotated[str, typer.Argument(help="A model name, file.py:factory, or TorchScript.")],
    size: Annotated[
        int, typer.Option("--size", min=1, help="Input size for the output shapes.")
    ] = default_of(list_layers, "size"),
    weights: WeightsOpt = None,
    leaves: Annotated[bool, typer.Option("--leaves", help="Only leaf modules.")] = False,
    layer: Annotated[
        str | None, typer.Option("--layer", help="Show only this layer and its sub-layers.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List a model's layers: dotted names, aliases, types, output shapes, receptive fields.

    Shapes do not depend on the weights, so a model without offline weights is shown with
    random ones."""
    try:
        cm = load_model(model, weights=weights)
    except WeightsUnavailableError:
        if weights is not None:
            raise
        cm = load_model(model, weights="random")
    rows = list_layers(cm, size, leaves_only=leaves)
    if layer is not None:
        dotted = cm.resolve(layer)
        rows = [r for r in rows if r.name == dotted or r.name.startswith(dotted + ".")]
    if as_json:
        write_json([asdict(r) for r in rows], None)
        return
    table = Table(title=f"{cm.name} at {size}×{size}")
    for col in ("name", "alias", "type", "output shape", "receptive field", "params"):
        table.add_column(col, justify="right" if col == "params" else "left")
    for r in rows:
        shape = "×".join(str(s) for s in r.shape) if r.shape else "-"
        rf = str(r.rf) if r.rf else ("global" if r.shape and len(r.shape) < 4 else "-")
        params = f"{r.params:,}" if r.params else ""
        table.add_row(r.name, r.alias or "", r.type, shape, rf, params)
    out.print(table)


@app.command("classify")
def classify_cmd(
    images: Annotated[
        list[str], typer.Argument(help="Image files or sample names (see `convscope samples`).")
    ],
    model: ModelOpt = "efficientnet_lite0",
    weights: WeightsOpt = None,
    top: Annotated[
        int, typer.Option("--top", min=1, help="How many classes to show.")
    ] = default_of(ConvModel.classify, "top"),
    as_json: JsonOpt = False,
    out_path: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the JSON result to this file.")
    ] = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    max_pixels: MaxPixelsOpt = MAX_PIXELS_DEFAULT,
    quiet: QuietOpt = False,
) -> None:
    """Classify images with an ImageNet classifier and print the top classes."""
    loaded = [load_image_or_sample(spec, max_pixels=max_pixels) for spec in images]
    cm = open_model(model, weights, device, seed)
    preds = [cm.classify(img, top=top)[0] for img, _ in loaded]
    result = [
        {
            "image": spec,
            "predictions": [{"index": p.index, "name": p.name, "prob": p.prob} for p in ps],
        }
        for spec, ps in zip(images, preds, strict=True)
    ]
    if as_json or out_path is not None:
        write_json(result, out_path)
        if not as_json:
            return
        return
    for r, ps in zip(result, preds, strict=True):
        out.print(f"[bold]{r['image']}[/]")
        for p in ps:
            bar = "█" * max(1, round(p.prob * 30))
            out.print(f"  {p.prob:6.1%}  {bar:<30}  {p.name}  [dim]({p.index})[/]")
