"""`convscope filters` and `convscope activations`, and their demo sections."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from PIL import Image
from torch import Tensor

from convscope.cli.app import app
from convscope.cli.common import (
    MAX_PIXELS_DEFAULT,
    DeviceOpt,
    MaxPixelsOpt,
    ModelOpt,
    QuietOpt,
    SeedOpt,
    WeightsOpt,
    console,
    default_of,
    open_model,
)
from convscope.data.images import save_png
from convscope.data.samples import load_image_or_sample, load_sample
from convscope.errors import UserInputError, WeightsUnavailableError
from convscope.inspect.activations import (
    activation_grid,
    activation_maps,
    activation_overlay,
    parse_channels,
    strongest_channels,
)
from convscope.inspect.filters import _side_by_side, compare_first_layers, filter_grid
from convscope.models import ConvModel
from convscope.render.grids import image_grid, titled
from convscope.render.html import Figure, Section
from convscope.render.maps import Scaling

if TYPE_CHECKING:
    from convscope.cli.demo import DemoContext

__all__ = [
    "activations_cmd",
    "activations_demo_section",
    "filters_cmd",
    "filters_demo_section",
]

DEFAULT_CHANNELS = 64
"""Without --channels, layers with more channels than this show the first ones only."""

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")]


def _wrote(path: Path, image: Image.Image, quiet: bool) -> None:
    save_png(image, path)
    if not quiet:
        console.print(f"Wrote {path} ({image.width}x{image.height}).")


# ---- filters ------------------------------------------------------------------------------


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
    out: OutOpt,
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
    ] = default_of(filter_grid, "max_filters"),
    max_inputs: Annotated[
        int | None,
        typer.Option(
            "--max-inputs",
            min=1,
            help="Per-input slices shown for each filter of a higher layer. Default: 16.",
        ),
    ] = default_of(filter_grid, "max_inputs"),
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Draw a conv layer's filters: RGB tiles for the first layer, grayscale slices per input
    channel for higher layers, one tile per depthwise filter. Each filter is scaled to its own
    min..max."""
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
    loaded = [open_model(m, weights, device, seed) for m in models]
    if len(loaded) == 1:
        image = filter_grid(loaded[0], layer, max_filters=max_filters, max_inputs=max_inputs)
    else:
        image = compare_first_layers(loaded, max_filters=max_filters)
    _wrote(out, image, quiet)


# ---- activations --------------------------------------------------------------------------


def _overlay_tile(height: int, width: int) -> int:
    """Tile side for an overlay figure: whole-factor enlargement of small images, ≤ 512."""
    side = max(height, width)
    if side >= 224:
        return min(side, 512)
    return side * math.ceil(224 / side)


def _overlay_figure(
    seen: Tensor, act: Tensor, channels: list[int], *, title: str, notes: list[str]
) -> Image.Image:
    """The image as the model saw it, then each channel of `act` upsampled over it."""
    h, w = int(seen.shape[1]), int(seen.shape[2])
    pictures = [seen, *(activation_overlay(seen, act[c]) for c in channels)]
    labels = [f"input {w}x{h}", *(f"ch {c}{note}" for c, note in zip(channels, notes, strict=True))]
    grid = image_grid(pictures, labels=labels, tile=_overlay_tile(h, w), ncol=len(pictures))
    return titled(grid, title, height=28)


def _layer_label(cm: ConvModel, layer: str) -> str:
    dotted = cm.resolve(layer)
    return layer if dotted == layer else f"{layer} ({dotted})"


@app.command("activations")
def activations_cmd(
    image: Annotated[
        str, typer.Argument(help="An image file or a sample name (see `convscope samples`).")
    ],
    out: OutOpt,
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
    ] = default_of(activation_grid, "scaling"),
    ncol: Annotated[
        int | None, typer.Option("--ncol", min=1, help="Columns in the grid.")
    ] = default_of(activation_grid, "ncol"),
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
    if scaling not in ("channel", "shared"):
        raise UserInputError(f"--scaling must be 'channel' or 'shared', got {scaling!r}.")
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
        picture = _overlay_figure(seen, act, [pick], title=title, notes=[note])
    else:
        mode: Scaling = "shared" if scaling == "shared" else "channel"
        picture = activation_grid(act, channels=chosen, scaling=mode, ncol=ncol, title=title)
    _wrote(out, picture, quiet)


# ---- demo sections ------------------------------------------------------------------------


def _try_model(ctx: DemoContext, name: str, skipped: list[str]) -> ConvModel | None:
    try:
        return ctx.model(name)
    except WeightsUnavailableError as exc:
        skipped.append(f"{name} skipped: {exc}")
        return None


def filters_demo_section(ctx: DemoContext) -> Section:
    """First-layer filters of two networks side by side, higher-layer slices, depthwise."""
    skipped: list[str] = []
    eff = _try_model(ctx, "efficientnet_lite0", skipped)
    vgg = _try_model(ctx, "vgg16", skipped)
    figures: list[Figure] = []
    firsts = [m for m in (eff, vgg) if m is not None]
    if firsts:
        fig = ctx.save("filters_first_layers.png", compare_first_layers(firsts))
        figures.append(
            Figure(
                fig.src,
                "First-layer filters, each an RGB tile scaled to its own min..max: oriented "
                "edges, colour opponents and blobs appear in both networks.",
                wide=True,
            )
        )
    if vgg is not None:
        fig = ctx.save(
            "filters_vgg16_conv2_1.png", filter_grid(vgg, "conv2_1", max_filters=8, max_inputs=16)
        )
        figures.append(
            Figure(
                fig.src,
                "VGG16 conv2_1: one row per filter, one 3x3 slice per input channel (16 of "
                "64). A row shares its filter's scaling, so inputs a filter barely uses look "
                "flat gray.",
                wide=True,
            )
        )
    if eff is not None:
        fig = ctx.save(
            "filters_efficientnet_depthwise.png",
            filter_grid(eff, "_blocks.3._depthwise_conv", max_filters=64),
        )
        figures.append(
            Figure(
                fig.src,
                "EfficientNet-Lite0 block 3: depthwise 5x5 filters, each working on a single "
                "channel, so each is one grayscale tile.",
            )
        )
    return Section(
        "Filters",
        "What the convolution weights look like. First layers are RGB and readable; deeper "
        "layers mix many channels, so each filter becomes a row of per-input slices.",
        figures,
        notes=tuple(skipped),
    )


def _spread(act: Tensor, k: int) -> list[int]:
    """`k` live channels spanning strongest to weakest mean, strongest first."""
    means = act.float().mean(dim=(1, 2))
    live = [int(i) for i in means.argsort(descending=True) if act[int(i)].amax() > 0]
    if len(live) <= k:
        return live
    return list(dict.fromkeys(live[round(j * (len(live) - 1) / (k - 1))] for j in range(k)))


_SCALINGS: tuple[tuple[Scaling, str], ...] = (("shared", "shared"), ("channel", "per-channel"))


def activations_demo_section(ctx: DemoContext) -> Section:
    """An overlay of strongly activating channels, and shared vs per-channel scaling."""
    skipped: list[str] = []
    figures: list[Figure] = []
    eff = _try_model(ctx, "efficientnet_lite0", skipped)
    if eff is not None:
        coffee = load_sample("coffee")
        act = activation_maps(eff, coffee, "block10")
        top = strongest_channels(act, 3)
        c, h, w = act.shape
        seen = eff.preprocess.geometry(coffee)
        picture = _overlay_figure(
            seen,
            act,
            top,
            title=f"efficientnet_lite0 · block10 · {c}x{h}x{w} on coffee",
            notes=[f" (#{r + 1} by mean)" for r in range(len(top))],
        )
        fig = ctx.save("act_overlay_block10.png", picture)
        figures.append(
            Figure(
                fig.src,
                f"The three block10 channels with the highest mean, their {h}x{w} maps "
                "upsampled bilinearly over the crop the model saw (inferno: dark = low).",
                wide=True,
            )
        )
    vgg = _try_model(ctx, "vgg16", skipped)
    if vgg is not None:
        act = activation_maps(vgg, load_sample("cat"), "relu3_3")
        chosen = _spread(act, 16)
        grids = [
            activation_grid(
                act,
                channels=chosen,
                scaling=scaling,
                ncol=4,
                title=f"vgg16 relu3_3 on cat · {label}",
            )
            for scaling, label in _SCALINGS
        ]
        fig = ctx.save(
            "act_scaling_relu3_3.png", _side_by_side(grids, gap=24, background=(255, 255, 255))
        )
        figures.append(
            Figure(
                fig.src,
                "The same 16 channels of relu3_3, ordered from the strongest mean to the "
                "weakest. Left, one shared min..max: a few strong channels "
                "dominate and weak ones are nearly black. Right, each map stretched to its own "
                "min..max: every channel's pattern shows, but brightness no longer compares.",
                wide=True,
            )
        )
    return Section(
        "Activation scaling and overlays",
        "Which channels fire where. How maps are scaled changes what you see, so every grid "
        "states its scaling.",
        figures,
        notes=tuple(skipped),
    )
