"""`convscope style`: neural style transfer (Gatys et al. 2016) with neural-style's knobs."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from convscope.cli.application import app
from convscope.cli.common import (
    check_outputs,
    library_constant,
    library_default,
    open_model,
    parse_floats,
    parse_layers,
    progress_bar,
    return_freed_memory,
    write_json,
)
from convscope.cli.options import (
    MAX_PIXELS_DEFAULT,
    DeviceOpt,
    ImageArg,
    JsonOpt,
    MaxPixelsOpt,
    ModelOpt,
    OutPngOpt,
    QuietOpt,
    SeedOpt,
    WeightsOpt,
)
from convscope.cli.synthesis import DryRunOpt, recipe_text, report_estimate, save_synthesis, wrote
from convscope.errors import Interrupted, UserInputError

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["Optimizer", "Pooling", "Precision", "style_cmd"]

_STYLE = "convscope.synthesize.recipes.style:style_transfer"
_PERCEPTUAL = "convscope.synthesize.perceptual"
STYLE_LAYERS: tuple[str, ...] = library_constant(_PERCEPTUAL, "STYLE_LAYERS")
CONTENT_LAYERS: tuple[str, ...] = library_constant(_PERCEPTUAL, "CONTENT_LAYERS")
INITS: tuple[str, ...] = library_constant("convscope.synthesize.recipes.style", "INITS")


class Optimizer(StrEnum):
    lbfgs = "lbfgs"
    adam = "adam"


class Pooling(StrEnum):
    max = "max"
    avg = "avg"


class Precision(StrEnum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


class ColorTransfer(StrEnum):
    histogram = "histogram"
    lab = "lab"


def _grey(path: str, max_pixels: int) -> Tensor:
    """A mask file as one channel (H, W) in [0, 1] (its luminance)."""
    from convscope.data.samples import load_image_or_sample

    image, _ = load_image_or_sample(path, max_pixels=max_pixels)
    r, g, b = image[0], image[1], image[2]
    return (0.299 * r + 0.587 * g + 0.114 * b).clamp(0.0, 1.0)


def save_every_path(out: Path, step: int) -> Path:
    """Where --save-every writes the image after `step` steps: beside --out."""
    return out.with_name(f"{out.stem}_{step:05d}{out.suffix}")


@app.command("style")
def style_cmd(
    ctx: typer.Context,
    content: ImageArg,
    styles: Annotated[
        list[str],
        typer.Argument(help="One or more style images (files or sample names)."),
    ],
    out_path: OutPngOpt,
    model: ModelOpt = "vgg16",
    size: Annotated[
        int, typer.Option("--size", "-s", help="The output's long side in pixels.")
    ] = library_default(_STYLE, "size"),
    content_weight: Annotated[
        float,
        typer.Option("--content-weight", help="The weight of the content loss (0 or more)."),
    ] = library_default(_STYLE, "content_weight"),
    style_weight: Annotated[
        float,
        typer.Option("--style-weight", help="The weight of the style loss (above 0)."),
    ] = library_default(_STYLE, "style_weight"),
    tv_weight: Annotated[
        float,
        typer.Option(
            "--tv-weight", help="The weight of the total variation (smoothness) loss (0 or more)."
        ),
    ] = library_default(_STYLE, "tv_weight"),
    content_layers: Annotated[
        str,
        typer.Option("--content-layers", help="Comma-separated layers of the content loss."),
    ] = ",".join(CONTENT_LAYERS),
    style_layers: Annotated[
        str,
        typer.Option("--style-layers", help="Comma-separated layers of the style loss."),
    ] = ",".join(STYLE_LAYERS),
    style_scale: Annotated[
        float,
        typer.Option(
            "--style-scale", help="Each style image's size relative to the output's (above 0)."
        ),
    ] = library_default(_STYLE, "style_scale"),
    style_blend_weights: Annotated[
        str | None,
        typer.Option(
            "--style-blend-weights",
            help="One weight per style image, e.g. 3,7 (normalized to sum 1; default: equal).",
        ),
    ] = None,
    original_colors: Annotated[
        bool,
        typer.Option(
            "--original-colors",
            help="Keep the content's colours: only the luminance is stylized (YCbCr).",
        ),
    ] = library_default(_STYLE, "original_colors"),
    color_transfer: Annotated[
        ColorTransfer | None,
        typer.Option(
            "--color-transfer",
            help="Recolour each style image to the content's palette first: histogram "
            "(per-channel histogram matching) or lab (Reinhard's mean and spread in L*a*b*).",
        ),
    ] = None,
    init: Annotated[
        str,
        typer.Option("--init", help="The start: content, noise, style, or an image file."),
    ] = library_default(_STYLE, "init"),
    optimizer: Annotated[
        Optimizer, typer.Option("--optimizer", help="lbfgs (neural-style's default) or adam.")
    ] = Optimizer(library_default(_STYLE, "optimizer")),
    lr: Annotated[
        float | None,
        typer.Option("--lr", help="The learning rate (default: 1 for lbfgs, 0.02 for adam)."),
    ] = None,
    steps: Annotated[
        int, typer.Option("--steps", help="Optimizer steps (per scale with --multiscale).")
    ] = library_default(_STYLE, "steps"),
    pooling: Annotated[
        Pooling,
        typer.Option("--pooling", help="max, or avg (Gatys et al.'s, for smoother gradients)."),
    ] = Pooling(library_default(_STYLE, "pooling")),
    mask: Annotated[
        list[str] | None,
        typer.Option(
            "--mask",
            help="A region mask the content's size (white: styled); give one per style image "
            "(repeat the option), and regions that no mask covers stay as the content.",
        ),
    ] = None,
    multiscale: Annotated[
        bool,
        typer.Option(
            "--multiscale",
            help="Coarse to fine: start at 256 px and double up to --size, each scale starting "
            "from the last one's result.",
        ),
    ] = library_default(_STYLE, "multiscale"),
    tile: Annotated[
        int | None,
        typer.Option(
            "--tile",
            help="Optimize in tiles of at most TILE px at a random offset each step, each "
            "with a halo of half the deepest layer's receptive field, so a step equals the "
            "whole image's, for outputs larger than memory allows (needs --optimizer adam; "
            "the output's sides are rounded to the layer's stride).",
        ),
    ] = None,
    dream_weight: Annotated[
        float,
        typer.Option("--dream-weight", help="Add DeepDream at --dream-layer with this weight."),
    ] = library_default(_STYLE, "dream_weight"),
    dream_layer: Annotated[
        str | None, typer.Option("--dream-layer", help="The layer DeepDream amplifies.")
    ] = None,
    precision: Annotated[
        Precision,
        typer.Option(
            "--precision",
            help="auto: bfloat16 where the CPU or GPU does it natively, else float32.",
        ),
    ] = Precision(library_default(_STYLE, "precision")),
    save_every: Annotated[
        int | None,
        typer.Option(
            "--save-every",
            help="Also write the image every N steps, beside --out as NAME_00100.png.",
        ),
    ] = None,
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = library_default(_STYLE, "seed"),
    max_pixels: MaxPixelsOpt = MAX_PIXELS_DEFAULT,
    json_out: JsonOpt = False,
    dry_run: DryRunOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Neural style transfer (Gatys, Ecker & Bethge 2016): an image with the content's
    features at --content-layers and the styles' Gram matrices at --style-layers, found by
    L-BFGS from the content. The losses are normalized per layer (relative errors, TV averaged
    over pixels), so the weights work at any size and layer set. The progress bar shows the
    content, style and TV losses.

    The PNG records its recipe (`convscope reproduce` runs it again)."""
    from convscope.data.samples import load_image_or_sample
    from convscope.synthesize.recipes.style import plan_style, run_style

    check_outputs(out_path)
    if save_every is not None and save_every < 1:
        raise UserInputError(f"--save-every must be at least 1, got {save_every}.")
    if out_path.suffix.lower() != ".png":
        raise UserInputError(f"the output is written as .png, not {out_path.suffix or 'nothing'}.")
    content_img, _ = load_image_or_sample(content, max_pixels=max_pixels)
    style_imgs = [load_image_or_sample(s, max_pixels=max_pixels)[0] for s in styles]
    blend = None
    if style_blend_weights is not None:
        blend = parse_floats(style_blend_weights, "--style-blend-weights")
    masks = None if not mask else [_grey(m, max_pixels) for m in mask]
    start: str | Tensor = init
    if init not in INITS:
        start = load_image_or_sample(init, max_pixels=max_pixels)[0]
    cm = open_model(model, weights, device)
    options: dict[str, Any] = dict(
        size=size,
        content_weight=content_weight,
        style_weight=style_weight,
        tv_weight=tv_weight,
        content_layers=parse_layers(content_layers),
        style_layers=parse_layers(style_layers),
        style_scale=style_scale,
        blend=blend,
        original_colors=original_colors,
        color_transfer=None if color_transfer is None else color_transfer.value,
        init=start,
        optimizer=optimizer.value,
        lr=lr,
        steps=steps,
        seed=seed,
        pooling=pooling.value,
        masks=masks,
        multiscale=multiscale,
        tile=tile,
        dream_weight=dream_weight,
        dream_layer=dream_layer,
        precision=precision.value,
    )
    if tile is not None:
        return_freed_memory()
    plan = plan_style(cm, content_img, style_imgs, **options)
    if dry_run:
        for k, (h, w) in enumerate(plan.sizes):
            run = plan.run_at(k, plan.start_image(plan.sizes[0]))
            report_estimate(
                run.estimate(),
                steps=plan.steps,
                what=f"style {w}x{h} ({plan.precision})",
                device=str(cm.device),
            )
        return
    if save_every is not None:
        for step in range(save_every, plan.total_steps + 1, save_every):
            check_outputs(out_path, save_every_path(out_path, step))
    text = recipe_text(ctx, recipe="style", model=cm, seed=seed)

    def keep(event: Any) -> None:
        preview = getattr(event, "preview", None)
        if save_every is not None and preview is not None and event.done % save_every == 0:
            save_synthesis(preview[0], save_every_path(out_path, event.done), text)

    try:
        with progress_bar(quiet) as bar:

            def on_progress(event: Any) -> None:
                keep(event)
                bar(event)

            result = run_style(plan, on_progress=on_progress, preview_every=save_every)
    except KeyboardInterrupt:
        hint = "nothing more was written; run the command again to start over."
        raise Interrupted(hint) from None
    text = recipe_text(ctx, recipe="style", model=cm, seed=seed, extra={"report": result.report()})
    save_synthesis(result.image, out_path, text)
    if json_out:
        write_json(result.report(), None)
    if not quiet:
        losses = ", ".join(f"{k} {v:.4g}" for k, v in result.losses.items() if k != "loss")
        h, w = int(result.image.shape[-2]), int(result.image.shape[-1])
        wrote(out_path, f"{w}x{h}, {result.steps} steps, {result.precision}; {losses}")
