"""`convscope filters` and `convscope activations`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from convscope.cli.application import app
from convscope.cli.common import check_outputs, console, library_default, open_model
from convscope.cli.options import (
    MAX_PIXELS_DEFAULT,
    DeviceOpt,
    ImageArg,
    MaxPixelsOpt,
    ModelOpt,
    OutPngOpt,
    QuietOpt,
    SeedOpt,
    WeightsOpt,
)
from convscope.errors import UserInputError

if TYPE_CHECKING:
    from PIL import Image

    from convscope.models import ConvModel
    from convscope.render.maps import Scaling

DEFAULT_CHANNELS = 64
"""Without --channels, layers with more channels than this show the first ones only."""

_GRID = "convscope.inspect.activations:activation_grid"
_FILTERS = "convscope.inspect.filters:filter_grid"


def _wrote(path: Path, image: Image.Image, quiet: bool) -> None:
    from convscope.data.images import save_png

    save_png(image, path)
    if not quiet:
        console.print(f"Wrote {path} ({image.width}x{image.height}).")


@app.command("filters")
def filters_cmd(
    models: Annotated[
        list[str],
        typer.Option(
            "--model",
            "-m",
            help="A model (see `convscope models`); repeat to put several models' first-layer "
            "filters side by side.",
        ),
    ],
    out: OutPngOpt,
    layer: Annotated[
        str | None,
        typer.Option(
            "--layer", "-l", help="A conv layer (alias or dotted name). Default: the first conv."
        ),
    ] = None,
    max_filters: Annotated[
        int | None,
        typer.Option(
            "--max-filters",
            min=1,
            help="Show at most this many filters. Default: up to 256 (16 for layers drawn as "
            "per-input slices).",
        ),
    ] = library_default(_FILTERS, "max_filters"),
    max_inputs: Annotated[
        int | None,
        typer.Option(
            "--max-inputs",
            min=1,
            help="Per-input slices shown for each filter of a higher layer. Default: 16.",
        ),
    ] = library_default(_FILTERS, "max_inputs"),
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Draw a conv layer's filters: RGB tiles for the first layer, grayscale slices per input
    channel for higher layers, one tile per depthwise filter. Each filter is scaled to its own
    min..max."""
    from convscope.inspect.filters import compare_first_layers, filter_grid

    if not models:
        raise UserInputError("give at least one --model.")
    if len(models) > 1 and layer is not None:
        raise UserInputError(
            "--layer works with a single --model; several models are compared on their "
            "first conv layer."
        )
    if len(models) > 1 and max_inputs is not None:
        raise UserInputError(
            "--max-inputs works with a single --model; first layers have no per-input slices."
        )
    check_outputs(out)
    loaded = [open_model(m, weights, device, seed) for m in models]
    if len(loaded) == 1:
        image = filter_grid(loaded[0], layer, max_filters=max_filters, max_inputs=max_inputs)
    else:
        image = compare_first_layers(loaded, max_filters=max_filters)
    _wrote(out, image, quiet)


def _layer_label(cm: ConvModel, layer: str) -> str:
    dotted = cm.resolve(layer)
    return layer if dotted == layer else f"{layer} ({dotted})"


@app.command("activations")
def activations_cmd(
    image: ImageArg,
    out: OutPngOpt,
    model: ModelOpt = "efficientnet_lite0",
    layer: Annotated[
        str | None,
        typer.Option(
            "--layer",
            "-l",
            help="A layer (alias or dotted name; `convscope layers MODEL` lists them). "
            "Default: the model's default layer.",
        ),
    ] = None,
    channels: Annotated[
        str | None,
        typer.Option(
            "--channels",
            "-c",
            help=f"Channels to show: 0-63, 3,5,9-12 or all. Default: all, or 0-"
            f"{DEFAULT_CHANNELS - 1} for layers with more than {DEFAULT_CHANNELS}.",
        ),
    ] = None,
    scaling: Annotated[
        str,
        typer.Option(
            "--scaling",
            help="channel: each map stretched to its own min..max; shared: one min..max for "
            "all shown maps (weak channels go dark).",
        ),
    ] = library_default(_GRID, "scaling"),
    ncol: Annotated[int | None, typer.Option("--ncol", min=1, help="Columns in the grid.")] = (
        library_default(_GRID, "ncol")
    ),
    overlay: Annotated[
        bool,
        typer.Option(
            "--overlay",
            help="Instead of the grid, draw one channel upsampled over the input image (as the "
            "model saw it, after resize and crop).",
        ),
    ] = False,
    overlay_channel: Annotated[
        int | None,
        typer.Option(
            "--overlay-channel",
            help="The channel to overlay (implies --overlay). Default: the one with the "
            "highest mean among --channels.",
        ),
    ] = None,
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    max_pixels: MaxPixelsOpt = MAX_PIXELS_DEFAULT,
    quiet: QuietOpt = False,
) -> None:
    """Draw a layer's activation maps for one image, as a labelled grid with the scaling
    written on it, or one channel over the image (--overlay)."""
    from convscope.data.samples import load_image_or_sample
    from convscope.inspect.activations import (
        activation_grid,
        activation_maps,
        overlay_figure,
        parse_channels,
        strongest_channels,
    )

    if scaling not in ("channel", "shared"):
        raise UserInputError(f"--scaling must be 'channel' or 'shared', got {scaling!r}.")
    check_outputs(out)
    img, _ = load_image_or_sample(image, max_pixels=max_pixels)
    cm = open_model(model, weights, device, seed)
    if layer is None:
        if cm.default_layer is None:
            raise UserInputError(f"model {cm.name} has no default layer; give --layer.")
        layer = cm.alias_of(cm.default_layer) or cm.default_layer
    act = activation_maps(cm, img, layer)  # (C, h, w)
    c, h, w = (int(d) for d in act.shape)
    if channels is not None:
        chosen = parse_channels(channels, c, layer=layer)
    else:
        chosen = list(range(min(c, DEFAULT_CHANNELS)))
        if c > DEFAULT_CHANNELS and not overlay and overlay_channel is None and not quiet:
            console.print(
                f"Showing channels 0-{DEFAULT_CHANNELS - 1} of {c}; choose others with --channels."
            )
    title = f"{cm.name} · {_layer_label(cm, layer)} · {c}x{h}x{w}"
    if overlay or overlay_channel is not None:
        if overlay_channel is not None:
            if not 0 <= overlay_channel < c:
                raise UserInputError(
                    f"channel {overlay_channel} is out of range 0..{c - 1} for layer {layer}."
                )
            pick, note = overlay_channel, ""
        else:
            pool = chosen if channels is not None else None
            pick, note = strongest_channels(act, 1, pool)[0], " (highest mean)"
        seen = cm.preprocess.geometry(img)
        picture = overlay_figure(seen, act, [pick], title=title, notes=[note])
    else:
        mode: Scaling = "shared" if scaling == "shared" else "channel"
        picture = activation_grid(act, channels=chosen, scaling=mode, ncol=ncol, title=title)
    _wrote(out, picture, quiet)
