"""`convscope atlas`: a static "microscope" site of a model, one page per channel."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from convscope.cli.application import app
from convscope.cli.common import ProgressBars, library_default, open_model, out, parse_layers
from convscope.cli.options import (
    MAX_PIXELS_DEFAULT,
    DeviceOpt,
    LimitOpt,
    MaxPixelsOpt,
    ModelOpt,
    QuietOpt,
    WeightsOpt,
)
from convscope.errors import Interrupted, UserInputError

__all__ = ["atlas_cmd"]

_BUILD = "convscope.atlas.build:build_atlas"


class MapMethod(StrEnum):
    tsne = "tsne"
    pca = "pca"
    umap = "umap"


@app.command("atlas")
def atlas_cmd(
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="The folder to write the site into (made if missing; reused)."
        ),
    ],
    layers: Annotated[
        str, typer.Option("--layers", "-l", help="Spatial layers, comma-separated: L1,L2.")
    ],
    model: ModelOpt = "efficientnet_lite0",
    dataset: Annotated[
        str,
        typer.Option(
            "--dataset",
            "-d",
            help="A folder of images (sub-folders are classes) or a built-in dataset (see "
            "`convscope samples`).",
        ),
    ] = "sample-crops",
    channels: Annotated[
        str | None,
        typer.Option(
            "--channels",
            help="Channels of every layer, e.g. 0-15, 3,7,9 or all (default: the first 8 of each).",
        ),
    ] = None,
    steps: Annotated[
        int, typer.Option("--steps", min=1, help="Steps of each feature visualization (lucid).")
    ] = library_default(_BUILD, "steps"),
    size: Annotated[
        int, typer.Option("--size", min=16, help="Side of the feature visualizations in pixels.")
    ] = library_default(_BUILD, "size"),
    vis_batch: Annotated[
        int, typer.Option("--vis-batch", min=1, help="Channels optimized together in one batch.")
    ] = library_default(_BUILD, "vis_batch"),
    diverse: Annotated[
        int,
        typer.Option("--diverse", min=0, help="Diverse images per channel (0: none; else 2+)."),
    ] = library_default(_BUILD, "diverse"),
    diversity: Annotated[
        float,
        typer.Option(
            "--diversity", min=0.0, help="Weight of the diversity term (Olah et al. 2017)."
        ),
    ] = library_default(_BUILD, "diversity_weight"),
    k: Annotated[
        int, typer.Option("--k", min=1, help="Top dataset patches per channel.")
    ] = library_default(_BUILD, "k"),
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Images per forward pass of the scans.")
    ] = library_default(_BUILD, "batch_size"),
    limit: LimitOpt = None,
    map_layer: Annotated[
        str | None,
        typer.Option(
            "--map-layer",
            help="The layer whose average-pooled features place the images on the map "
            "(default: `embed`, else the model's own).",
        ),
    ] = None,
    map_method: Annotated[
        MapMethod, typer.Option("--map-method", help="tsne, pca or umap (umap-learn).")
    ] = MapMethod(library_default(_BUILD, "map_method")),
    map_points: Annotated[
        int,
        typer.Option("--map-points", min=2, help="At most this many images on the map."),
    ] = library_default(_BUILD, "map_points"),
    neighbors: Annotated[
        int, typer.Option("--neighbors", min=1, help="Neighbours a click on the map shows.")
    ] = library_default(_BUILD, "neighbors"),
    perplexity: Annotated[
        float, typer.Option("--perplexity", min=0.1, help="t-SNE perplexity.")
    ] = library_default(_BUILD, "perplexity"),
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = library_default(
        _BUILD, "seed"
    ),
    max_pixels: MaxPixelsOpt = MAX_PIXELS_DEFAULT,
    quiet: QuietOpt = False,
) -> None:
    """Write a static site of a model that opens from the filesystem: for each channel of the
    chosen layers, its feature visualization and diverse images, the dataset patches that
    excite it most (with guided backprop) and its mean activation per class; and a t-SNE map
    of the dataset where clicking an image shows its nearest neighbours.

    Run it again into the same folder to continue an interrupted run: finished work is never
    computed twice. Under `torchrun`, the dataset scans and the channels are shared out
    among the ranks."""
    from convscope.atlas.build import check_atlas_folder

    names = parse_layers(layers)
    if not names:
        raise UserInputError("--layers names no layer; give layers like block6,block10.")
    check_atlas_folder(out_dir)  # before any work
    rank = 0
    try:
        from convscope.atlas import build_atlas
        from convscope.data.datasets import load_dataset
        from convscope.events import Progress
        from convscope.inspect.scan import distributed_context

        rank, world = distributed_context()
        data = load_dataset(dataset, max_pixels=max_pixels)
        cm = open_model(model, weights, device, seed)
        try:
            with ProgressBars(quiet or rank != 0) as bars:
                current = [""]

                def on_progress(event: Progress) -> None:
                    if event.task == "atlas" and event.message != current[0]:
                        current[0] = event.message
                        bars.clear(keep=["atlas"])  # a new job: only the overall bar stays
                    bars(event)

                result = build_atlas(
                    cm,
                    data,
                    names,
                    out=out_dir,
                    channels=channels,
                    steps=steps,
                    size=size,
                    vis_batch=vis_batch,
                    diverse=diverse,
                    diversity_weight=diversity,
                    k=k,
                    batch_size=batch_size,
                    limit=limit,
                    map_layer=map_layer,
                    map_method=map_method.value,  # type: ignore[arg-type]
                    map_points=map_points,
                    neighbors=neighbors,
                    perplexity=perplexity,
                    seed=seed,
                    rank=rank,
                    world=world,
                    on_progress=on_progress,
                )
        except KeyboardInterrupt:
            raise Interrupted(
                f"the finished work is kept in {out_dir}; run the same command again to continue."
            ) from None
    except UserInputError:
        if rank == 0:
            raise
        raise typer.Exit(2) from None  # every rank meets the same error; rank 0 says it
    if rank == 0 and not quiet:
        shown = sum(len(layer.channels) for layer in result.layers)
        out.print(
            f"Wrote {result.index} ({shown} channels of {len(result.layers)} layers; "
            f"{result.computed} jobs computed, {result.reused} reused)."
        )
