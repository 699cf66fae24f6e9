"""`convscope saliency`: which pixels a class (or a neuron) depends on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from convscope.cli.application import app
from convscope.cli.common import (
    check_outputs,
    console,
    library_constant,
    library_default,
    open_model,
    progress_bar,
)
from convscope.cli.options import (
    MAX_PIXELS_DEFAULT,
    DeviceOpt,
    ImagesArg,
    MaxPixelsOpt,
    ModelOpt,
    QuietOpt,
    SeedOpt,
    TargetOpt,
    WeightsOpt,
)
from convscope.errors import UnknownNameError, UserInputError

if TYPE_CHECKING:
    from PIL import Image
    from torch import Tensor

__all__ = ["DEFAULT_METHODS", "parse_methods", "parse_position", "saliency_cmd"]

METHOD_NAMES: tuple[str, ...] = library_constant("convscope.attribute.methods", "METHOD_NAMES")
FILLS: tuple[str, ...] = library_constant("convscope.attribute.occlusion", "FILLS")

DEFAULT_METHODS = "gradient,guided,gradcam"
"""Methods drawn when --method is not given: the three that need one backward pass each."""

_OCCLUSION = "convscope.attribute.occlusion:occlusion_map"
_SMOOTHGRAD = "convscope.attribute.gradients:smoothgrad_map"


def parse_methods(spec: str, option: str = "--method") -> list[str]:
    """ "gradient, guided" → ["gradient", "guided"]: known names, in order, without repeats."""
    names = [s.strip().lower() for s in spec.split(",") if s.strip()]
    if not names:
        raise UserInputError(f"{option} needs at least one method, e.g. gradient,guided.")
    for n in names:
        if n not in METHOD_NAMES:
            raise UnknownNameError("method", n, METHOD_NAMES)
    return list(dict.fromkeys(names))


def parse_position(spec: str | None) -> tuple[int, int] | None:
    """ "3,5" → (3, 5) (row y, column x of the layer's output)."""
    if spec is None:
        return None
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) != 2 or not all(p.lstrip("-").isdigit() for p in parts):
        raise UserInputError(f"--position must be two whole numbers y,x such as 3,5, got {spec!r}.")
    return int(parts[0]), int(parts[1])


def _check_options(
    methods: list[str], window: int, stride: int, fill: str, samples: int, noise: float
) -> None:
    if "occlusion" in methods:
        if window < 1:
            raise UserInputError(f"--window must be at least 1 pixel, got {window}.")
        if stride < 1:
            raise UserInputError(f"--stride must be at least 1 pixel, got {stride}.")
        if fill not in FILLS:
            raise UserInputError(f"--fill must be one of {', '.join(FILLS)}, got {fill!r}.")
    if "smoothgrad" in methods:
        if samples < 1:
            raise UserInputError(f"--samples must be at least 1, got {samples}.")
        if not 0.0 <= noise < float("inf"):
            raise UserInputError(f"--noise must be 0 or more, got {noise}.")


@app.command("saliency")
def saliency_cmd(
    images: ImagesArg,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="The PNG to write. Several images give one PNG with one panel per image, "
            "top to bottom.",
        ),
    ],
    model: ModelOpt = "efficientnet_lite0",
    target: TargetOpt = None,
    method: Annotated[
        str,
        typer.Option("--method", help="Comma-separated methods: " + ", ".join(METHOD_NAMES) + "."),
    ] = DEFAULT_METHODS,
    layer: Annotated[
        str | None,
        typer.Option(
            "--layer",
            "-l",
            help="With --channel: the layer of the neuron to explain. Without: Grad-CAM's "
            "layer (default: the model's default layer).",
        ),
    ] = None,
    channel: Annotated[
        int | None,
        typer.Option("--channel", "-c", help="Explain this channel of --layer, not a class."),
    ] = None,
    position: Annotated[
        str | None,
        typer.Option(
            "--position",
            help="The neuron's y,x in the layer's output. Default: where the channel is highest.",
        ),
    ] = None,
    window: Annotated[
        int, typer.Option("--window", help="Occlusion: side of the square window, in pixels.")
    ] = library_default(_OCCLUSION, "window"),
    stride: Annotated[
        int, typer.Option("--stride", help="Occlusion: step between window positions.")
    ] = library_default(_OCCLUSION, "stride"),
    fill: Annotated[
        str, typer.Option("--fill", help="Occlusion: what covers the window: gray, mean or blur.")
    ] = library_default(_OCCLUSION, "fill"),
    samples: Annotated[
        int, typer.Option("--samples", help="SmoothGrad: noisy copies averaged.")
    ] = library_default(_SMOOTHGRAD, "samples"),
    noise: Annotated[
        float,
        typer.Option("--noise", help="SmoothGrad: noise σ as a fraction of the [0, 1] range."),
    ] = library_default(_SMOOTHGRAD, "noise"),
    raw: Annotated[
        Path | None,
        typer.Option(
            "--raw",
            help="Also write the maps and the images as the model saw them (safetensors; keys "
            "METHOD.I and image.I, metadata with the model, methods, targets and images).",
        ),
    ] = None,
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    max_pixels: MaxPixelsOpt = MAX_PIXELS_DEFAULT,
    quiet: QuietOpt = False,
) -> None:
    """Saliency maps: which pixels a class score (or one neuron) depends on.

    Methods: gradient (Simonyan et al. 2014), guided backprop (Springenberg et al. 2015),
    smoothgrad (Smilkov et al. 2017), gradcam (Selvaraju et al. 2017) and occlusion (Zeiler &
    Fergus 2014). Each image gets a panel: the input as the model saw it and each method's
    map, alone and over the input."""
    methods = parse_methods(method)
    pos = parse_position(position)
    _check_options(methods, window, stride, fill, samples, noise)
    if layer is not None and channel is None and "gradcam" not in methods:
        raise UserInputError(
            f"--layer without --channel picks Grad-CAM's layer; add --channel to explain a "
            f"neuron of {layer}, or add gradcam to --method."
        )
    check_outputs(out, raw)
    import torch

    from convscope.attribute import (
        ClassTarget,
        NeuronTarget,
        class_probability,
        describe_target,
        explain_image,
        make_targets,
        seen_images,
    )
    from convscope.attribute.gradcam import cam_layer
    from convscope.data.files import atomic_paths
    from convscope.data.images import save_png
    from convscope.data.samples import load_image_or_sample
    from convscope.data.stream import save_tensors
    from convscope.events import Progress
    from convscope.render.heatmaps import saliency_panel
    from convscope.render.panels import stack_panels

    loaded = [load_image_or_sample(spec, max_pixels=max_pixels) for spec in images]
    cm = open_model(model, weights, device, seed)
    cam = layer if channel is None else None
    if "gradcam" in methods:
        cam_layer(cm, cam)
    seens = [seen_images(cm, img) for img, _ in loaded]  # each (1, 3, H, W)
    if "occlusion" in methods:
        for (_, label), seen in zip(loaded, seens, strict=True):
            h, w = int(seen.shape[-2]), int(seen.shape[-1])
            if window > min(h, w):
                raise UserInputError(
                    f"--window {window} is larger than the {w}x{h} image the model sees ({label})."
                )
    # Every target is checked before the first (possibly slow) map.
    all_targets = [
        make_targets(
            cm,
            seen,
            target,
            layer=layer if channel is not None else None,
            channel=channel,
            position=pos,
        )
        for seen in seens
    ]
    generator = torch.Generator().manual_seed(seed)
    options: dict[str, Any] = {
        "window": window,
        "stride": stride,
        "fill": fill,
        "samples": samples,
        "noise": noise,
        "generator": generator,
    }
    if cam is not None:
        options["layer"] = cam
    panels: list[Image.Image] = []
    tensors: dict[str, Tensor] = {}
    labels: list[str] = []
    with progress_bar(quiet) as on_progress:
        options["on_progress"] = on_progress  # occlusion reports its batches
        done = 0
        total = len(seens) * len(methods)

        def step(m: str) -> None:
            nonlocal done
            done += 1
            on_progress(Progress("saliency", done, total, unit="maps", message=m))

        for i, ((_, label), seen, targets) in enumerate(
            zip(loaded, seens, all_targets, strict=True)
        ):
            maps, signed = explain_image(cm, seen, targets, methods, options, on_method=step)
            described = describe_target(cm, targets[0])
            labels.append(described)
            p = class_probability(cm, seen, targets[0])
            title = f"{cm.name} · {label} · {described}" + ("" if p is None else f" · p={p:.0%}")
            panels.append(saliency_panel(seen[0], maps, title=title, signed=signed))
            tensors[f"image.{i}"] = seen[0].detach().float().cpu().contiguous()
            for m, v in maps.items():
                tensors[f"{m}.{i}"] = v.contiguous()
    picture = stack_panels(panels)
    meta: dict[str, str] = {}
    if raw is not None:
        first = all_targets[0][0]
        neuron = first if isinstance(first, NeuronTarget) else None
        meta = {
            "model": cm.name,
            "methods": ",".join(methods),
            "targets": json.dumps(labels),
            "target_indices": json.dumps(
                [t[0].index if isinstance(t[0], ClassTarget) else None for t in all_targets]
            ),
            "images": json.dumps([label for _, label in loaded]),
            "neuron": json.dumps(
                None
                if neuron is None
                else {"layer": neuron.layer, "channel": neuron.channel, "position": pos}
            ),
            "options": json.dumps(
                {k: v for k, v in options.items() if k not in ("generator", "on_progress")}
                | {"seed": seed},
                sort_keys=True,
            ),
        }
    with atomic_paths([p for p in (out, raw) if p is not None]) as tmps:
        save_png(picture, tmps[0])
        if raw is not None:
            save_tensors(tensors, tmps[1], meta)
    if not quiet:
        extra = f" and {raw}" if raw is not None else ""
        console.print(f"Wrote {out} ({picture.width}x{picture.height}){extra}.")
