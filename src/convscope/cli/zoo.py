"""`convscope models`, `samples`, `layers` and `classify`."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from convscope.cli.application import app
from convscope.cli.common import check_outputs, library_default, open_model, out, write_json
from convscope.cli.options import (
    MAX_PIXELS_DEFAULT,
    DeviceOpt,
    ImagesArg,
    JsonOpt,
    MaxPixelsOpt,
    ModelOpt,
    QuietOpt,
    SeedOpt,
    WeightsOpt,
)


@app.command("models")
def models_cmd(as_json: JsonOpt = False) -> None:
    """List the models, whether their weights are available offline, and their source."""
    from convscope.models import model_entries

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


@app.command("samples")
def samples_cmd(as_json: JsonOpt = False) -> None:
    """List the bundled sample images (usable wherever an IMAGE is asked for) and the
    built-in datasets (usable wherever a DATASET is)."""
    from convscope.data.datasets import dataset_names
    from convscope.data.samples import sample_info, sample_names

    images = [
        {"name": n, "source": sample_info(n).source, "licence": sample_info(n).licence}
        for n in sample_names()
    ]
    datasets = dataset_names()
    if as_json:
        write_json({"images": images, "datasets": datasets}, None)
        return
    table = Table(title="sample images")
    for col in ("name", "source", "licence"):
        table.add_column(col)
    for row in images:
        table.add_row(row["name"], row["source"], row["licence"])
    out.print(table)
    out.print("built-in datasets: " + ", ".join(datasets))


@app.command("layers")
def layers_cmd(
    model: Annotated[str, typer.Argument(help="A model name, file.py:factory, or TorchScript.")],
    size: Annotated[
        int, typer.Option("--size", min=1, help="Input size for the output shapes.")
    ] = library_default("convscope.probe:layers", "size"),
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
    from convscope.errors import WeightsUnavailableError
    from convscope.models import load_model
    from convscope.probe import layers as list_layers

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
    images: ImagesArg,
    model: ModelOpt = "efficientnet_lite0",
    weights: WeightsOpt = None,
    top: Annotated[
        int, typer.Option("--top", min=1, help="How many classes to show.")
    ] = library_default("convscope.models.base:ConvModel.classify", "top"),
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
    from convscope.data.samples import load_image_or_sample

    check_outputs(out_path)
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
        return
    for r, ps in zip(result, preds, strict=True):
        out.print(f"[bold]{r['image']}[/]")
        for p in ps:
            bar = "█" * max(1, round(p.prob * 30))
            out.print(f"  {p.prob:6.1%}  {bar:<30}  {p.name}  [dim]({p.index})[/]")
