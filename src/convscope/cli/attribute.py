"""`convscope saliency`: which pixels a class (or a neuron) depends on, and its demo section."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import torch
import typer
from PIL import Image
from torch import Tensor

from convscope.attribute import (
    METHODS,
    ClassTarget,
    NeuronTarget,
    Target,
    describe_target,
    make_targets,
    method_options,
    seen_images,
)
from convscope.attribute.gradcam import cam_layer
from convscope.attribute.gradients import guided_gradients, smoothgrad_map
from convscope.attribute.occlusion import occlusion_map
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
    progress_bar,
)
from convscope.data.images import save_png
from convscope.data.samples import load_image_or_sample, load_sample
from convscope.errors import UnknownNameError, UserInputError, WeightsUnavailableError
from convscope.events import Progress
from convscope.models import ConvModel
from convscope.models.weights import save_safetensors_atomic
from convscope.probe import capture, receptive_fields
from convscope.render.grids import image_grid, titled
from convscope.render.heatmaps import saliency_panel, signed_gradient_image
from convscope.render.html import Figure, Section

if TYPE_CHECKING:
    from convscope.cli.demo import DemoContext

__all__ = [
    "DEFAULT_METHODS",
    "FILLS",
    "attribution_demo_section",
    "explain_image",
    "parse_methods",
    "parse_position",
    "saliency_cmd",
    "stack_panels",
]

DEFAULT_METHODS = "gradient,guided,gradcam"
"""Methods drawn when --method is not given: the three that need one backward pass each."""

FILLS = ("gray", "mean", "blur")
"""What occlusion puts in the window (see `convscope.attribute.occlusion`)."""


def parse_methods(spec: str) -> list[str]:
    """ "gradient, guided" → ["gradient", "guided"]: known names, in order, without repeats."""
    names = [s.strip().lower() for s in spec.split(",") if s.strip()]
    if not names:
        raise UserInputError("--method needs at least one method, e.g. gradient,guided.")
    for n in names:
        if n not in METHODS:
            raise UnknownNameError("method", n, METHODS)
    return list(dict.fromkeys(names))


def parse_position(spec: str | None) -> tuple[int, int] | None:
    """ "3,5" → (3, 5) (row y, column x of the layer's output)."""
    if spec is None:
        return None
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) != 2 or not all(p.lstrip("-").isdigit() for p in parts):
        raise UserInputError(f"--position must be two whole numbers y,x such as 3,5, got {spec!r}.")
    return int(parts[0]), int(parts[1])


def _class_prob(cm: ConvModel, seen: Tensor, target: Target) -> str:
    """ " 95%" for a class target of a classifier, "" otherwise."""
    if not isinstance(target, ClassTarget) or cm.classes is None:
        return ""
    with torch.inference_mode():
        logits = cm(cm.preprocess.normalize(seen.to(cm.device)))
    if logits.dim() != 2 or logits.shape[1] <= target.index:
        return ""
    return f" · p={float(logits.float().softmax(dim=1)[0, target.index]):.0%}"


def explain_image(
    cm: ConvModel,
    seen: Tensor,
    targets: Sequence[Target],
    methods: Sequence[str],
    options: dict[str, Any],
    *,
    on_method: Any = None,
) -> tuple[dict[str, Tensor], Tensor | None]:
    """Run each method on one image `seen` (1, 3, H, W): its (H, W) maps by method name, and
    the signed (3, H, W) guided gradient when "guided" is among them (the guided map is
    derived from it, so guided backprop runs once)."""
    maps: dict[str, Tensor] = {}
    signed: Tensor | None = None
    for m in methods:
        if m == "guided":
            signed = guided_gradients(cm, seen, targets)[0]  # (3, H, W)
            maps[m] = signed.abs().amax(dim=0)
        else:
            maps[m] = METHODS[m](cm, seen, targets, **method_options(m, options, strict=False))[0]
        if on_method is not None:
            on_method(m)
    return maps, signed


def stack_panels(panels: Sequence[Image.Image], gap: int = 12) -> Image.Image:
    """Panels top to bottom on white, each centred; one panel is returned as it is."""
    if len(panels) == 1:
        return panels[0]
    width = max(p.width for p in panels)
    height = sum(p.height for p in panels) + gap * (len(panels) - 1)
    out = Image.new("RGB", (width, height), (255, 255, 255))
    y = 0
    for p in panels:
        out.paste(p.convert("RGB"), ((width - p.width) // 2, y))
        y += p.height + gap
    return out


def _check_occlusion(window: int, stride: int, fill: str) -> None:
    if window < 1:
        raise UserInputError(f"--window must be at least 1 pixel, got {window}.")
    if stride < 1:
        raise UserInputError(f"--stride must be at least 1 pixel, got {stride}.")
    if fill not in FILLS:
        raise UserInputError(f"--fill must be one of {', '.join(FILLS)}, got {fill!r}.")


@app.command("saliency")
def saliency_cmd(
    images: Annotated[
        list[str], typer.Argument(help="Image files or sample names (see `convscope samples`).")
    ],
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
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            "-t",
            help="A class name (close spellings are matched) or index. Default: each image's "
            "top prediction.",
        ),
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="Comma-separated methods: " + ", ".join(METHODS) + ".",
        ),
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
    ] = default_of(occlusion_map, "window"),
    stride: Annotated[
        int, typer.Option("--stride", help="Occlusion: step between window positions.")
    ] = default_of(occlusion_map, "stride"),
    fill: Annotated[
        str, typer.Option("--fill", help="Occlusion: what covers the window: gray, mean or blur.")
    ] = default_of(occlusion_map, "fill"),
    samples: Annotated[
        int, typer.Option("--samples", help="SmoothGrad: noisy copies averaged.")
    ] = default_of(smoothgrad_map, "samples"),
    noise: Annotated[
        float,
        typer.Option("--noise", help="SmoothGrad: noise σ as a fraction of the [0, 1] range."),
    ] = default_of(smoothgrad_map, "noise"),
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
    if "occlusion" in methods:
        _check_occlusion(window, stride, fill)
    if "smoothgrad" in methods:
        if samples < 1:
            raise UserInputError(f"--samples must be at least 1, got {samples}.")
        if not 0.0 <= noise < float("inf"):
            raise UserInputError(f"--noise must be 0 or more, got {noise}.")
    if layer is not None and channel is None and "gradcam" not in methods:
        raise UserInputError(
            f"--layer without --channel picks Grad-CAM's layer; add --channel to explain a "
            f"neuron of {layer}, or add gradcam to --method."
        )
    if out.parent and not out.parent.exists():
        raise UserInputError(f"Cannot write {out}: the folder {out.parent} does not exist.")
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
            title = f"{cm.name} · {label} · {described}{_class_prob(cm, seen, targets[0])}"
            panels.append(saliency_panel(seen[0], maps, title=title, signed=signed))
            tensors[f"image.{i}"] = seen[0].detach().float().cpu().contiguous()
            for m, v in maps.items():
                tensors[f"{m}.{i}"] = v.contiguous()
    picture = stack_panels(panels)
    save_png(picture, out)
    if raw is not None:
        neuron = all_targets[0][0] if isinstance(all_targets[0][0], NeuronTarget) else None
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
                | {"seed": seed}
            ),
        }
        save_safetensors_atomic(tensors, raw, metadata=meta)
    if not quiet:
        extra = f" and {raw}" if raw is not None else ""
        console.print(f"Wrote {out} ({picture.width}x{picture.height}){extra}.")


# ---- demo section -------------------------------------------------------------------------

DEMO_METHODS = ("occlusion", "gradient", "guided", "gradcam")
DEMO_NEURON_LAYER = "block5"


def _neuron_figure(cm: ConvModel, seen: Tensor, layer: str) -> tuple[Image.Image, str]:
    """Guided backprop of `layer`'s most active neuron on `seen` (1, 3, H, W): the input with
    the neuron's receptive field marked, its signed guided gradient, and both cropped to the
    field (the crop's gradient scaled on its own)."""
    act = capture(cm, cm.preprocess.normalize(seen.to(cm.device)), [layer])[layer][0]
    c = int(act.amax(dim=(1, 2)).argmax())
    _, h, w = act.shape
    y, x = divmod(int(act[c].flatten().argmax()), int(w))
    g = guided_gradients(cm, seen, [NeuronTarget(layer, c, (y, x))])[0]  # (3, H, W)
    H, W = int(seen.shape[-2]), int(seen.shape[-1])
    tiles = [seen[0].clone(), signed_gradient_image(g)]
    labels = ["input", "guided backprop"]
    rf = receptive_fields(cm, layer, W)[layer]
    if rf is not None:
        top, left, bottom, right = rf.box(y, x)
        t, lft, b, r = max(top, 0), max(left, 0), min(bottom, H), min(right, W)
        yellow = torch.tensor([1.0, 0.85, 0.0])[:, None]
        for edge in (t, b - 1):
            tiles[0][:, edge, lft:r] = yellow
        for edge in (lft, r - 1):
            tiles[0][:, t:b, edge] = yellow
        tiles += [seen[0][:, t:b, lft:r], signed_gradient_image(g[:, t:b, lft:r])]
        labels = ["input, neuron's field", "guided backprop", "field", "field: guided"]
    grid = image_grid(tiles, labels=labels, ncol=len(tiles), tile=224)
    caption = f"{layer} ch {c} @ {y},{x} of {h}x{w}"
    field = f", field {rf.size[0]} px" if rf is not None else ""
    title = f"{cm.name} · guided backprop of {caption}{field}"
    return titled(grid, title, height=30), caption


def attribution_demo_section(ctx: DemoContext) -> Section:
    """Occlusion, gradient, guided backprop and Grad-CAM on coffee and cat; the guided
    backprop of one intermediate neuron."""
    try:
        cm = ctx.model("efficientnet_lite0")
    except WeightsUnavailableError as exc:
        return Section("Saliency", f"Skipped: {exc}")
    figures: list[Figure] = []
    options: dict[str, Any] = {"window": 32, "stride": 16, "fill": "gray", "batch_size": 16}
    for sample in ("coffee", "cat"):
        seen = seen_images(cm, load_sample(sample))  # (1, 3, 224, 224)
        targets = make_targets(cm, seen)
        maps, signed = explain_image(cm, seen, targets, DEMO_METHODS, options)
        described = describe_target(cm, targets[0])
        title = f"{cm.name} · {sample} · {described}{_class_prob(cm, seen, targets[0])}"
        fig = ctx.save(
            f"saliency_{sample}.png", saliency_panel(seen[0], maps, title=title, signed=signed)
        )
        figures.append(
            Figure(
                fig.src,
                f"Why {sample} is '{described}': occlusion (the drop in probability while a "
                "32 px gray square, slid in 16 px steps, hides each region), the gradient, "
                "guided backprop and Grad-CAM at the last conv layer, each scaled to its own "
                "99th percentile (jet: red = most important). Bottom left: the signed guided "
                "gradient.",
                wide=True,
            )
        )
    cat = seen_images(cm, load_sample("cat"))
    picture, caption = _neuron_figure(cm, cat, DEMO_NEURON_LAYER)
    fig = ctx.save("saliency_neuron.png", picture)
    figures.append(
        Figure(
            fig.src,
            f"Guided backprop of one intermediate neuron ({caption}, the most active one on "
            "the cat): only pixels inside its receptive field (yellow box) can matter, and "
            "guided backprop shows which of them it responds to, signed (gray = zero).",
            wide=True,
        )
    )
    return Section(
        "Saliency",
        "Which pixels a prediction depends on. Occlusion measures it directly by hiding parts "
        "of the image; the gradient methods read it off one backward pass; Grad-CAM weights a "
        "late layer's maps by their gradients. `convscope saliency` draws these panels.",
        figures,
    )
