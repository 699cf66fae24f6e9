"""`convscope texture`: texture synthesis, neural (Gatys et al. 2015) or not (Efros & Leung)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from convscope.cli.application import app
from convscope.cli.common import (
    check_outputs,
    library_constant,
    library_default,
    open_model,
    parse_layers,
    progress_bar,
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
from convscope.cli.style import Optimizer, Pooling, Precision
from convscope.cli.synthesis import DryRunOpt, recipe_text, report_estimate, save_synthesis, wrote
from convscope.errors import Interrupted, UserInputError

__all__ = ["Method", "texture_cmd"]

_TEXTURE = "convscope.synthesize.recipes.texture:texture"
_EL = "convscope.synthesize.efros_leung:efros_leung"
STYLE_LAYERS: tuple[str, ...] = library_constant("convscope.synthesize.perceptual", "STYLE_LAYERS")


class Method(StrEnum):
    gatys = "gatys"
    efros_leung = "efros-leung"


def _only_for(method: Method, given: dict[str, Any]) -> None:
    """Options that belong to the other method are an error, not silently ignored."""
    wrong = [flag for flag, value in given.items() if value is not None]
    if wrong:
        other = "efros-leung" if method is Method.gatys else "gatys"
        raise UserInputError(
            f"{', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} for --method {other}, "
            f"not {method.value}."
        )


@app.command("texture")
def texture_cmd(
    ctx: typer.Context,
    image: ImageArg,
    out_path: OutPngOpt,
    method: Annotated[
        Method,
        typer.Option(
            "--method",
            help="gatys (Gram matrices of a CNN, from noise) or efros-leung (non-parametric "
            "pixel sampling, the classic baseline; no network).",
        ),
    ] = Method.gatys,
    size: Annotated[
        int,
        typer.Option("--size", "-s", help="The texture's side in pixels (may exceed the source)."),
    ] = library_default(_TEXTURE, "size"),
    style_size: Annotated[
        int | None,
        typer.Option("--style-size", help="Resize the source's long side to this first."),
    ] = None,
    progression: Annotated[
        bool,
        typer.Option(
            "--progression",
            help="The lecture's figure: one texture per growing layer set (the first layer; "
            "up to the second; …), side by side with the source.",
        ),
    ] = False,
    layers: Annotated[
        str | None,
        typer.Option(
            "--layers",
            "-l",
            help=f"gatys: comma-separated layers whose Gram matrices are matched "
            f"(default {','.join(STYLE_LAYERS)}).",
        ),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            "--steps",
            help=f"gatys: optimizer steps (default {library_default(_TEXTURE, 'steps')}).",
        ),
    ] = None,
    optimizer: Annotated[
        Optimizer | None, typer.Option("--optimizer", help="gatys: lbfgs (default) or adam.")
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option("--lr", help="gatys: the learning rate (default: 1 for lbfgs, 0.02 adam)."),
    ] = None,
    pooling: Annotated[
        Pooling | None,
        typer.Option("--pooling", help="gatys: avg (the paper's, default) or max."),
    ] = None,
    seamless: Annotated[
        bool,
        typer.Option("--seamless", help="gatys: make the texture tile without seams."),
    ] = False,
    precision: Annotated[
        Precision | None,
        typer.Option("--precision", help="gatys: auto (bfloat16 where native), fp32 or bf16."),
    ] = None,
    window: Annotated[
        int | None,
        typer.Option(
            "--window",
            help=f"efros-leung: the neighbourhood's side, odd (default "
            f"{library_default(_EL, 'window')}).",
        ),
    ] = None,
    levels: Annotated[
        int | None,
        typer.Option(
            "--levels",
            help=f"efros-leung: pyramid levels, coarse to fine (default "
            f"{library_default(_EL, 'levels')}).",
        ),
    ] = None,
    model: ModelOpt = "vgg16",
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = library_default(_TEXTURE, "seed"),
    max_pixels: MaxPixelsOpt = MAX_PIXELS_DEFAULT,
    json_out: JsonOpt = False,
    dry_run: DryRunOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Texture synthesis. gatys (Gatys, Ecker & Bethge 2015): from noise, match the Gram
    matrices of VGG16 layers (average pooling, L-BFGS). efros-leung (Efros & Leung 1999, with
    Wei & Levoy 2000's tree search): copy pixels whose neighbourhoods match the source's.

    The PNG records its recipe (`convscope reproduce` runs it again)."""
    from convscope.data.samples import load_image_or_sample

    check_outputs(out_path)
    picture, _ = load_image_or_sample(image, max_pixels=max_pixels)
    if method is Method.efros_leung:
        _only_for(
            method,
            {
                "--layers": layers,
                "--steps": steps,
                "--optimizer": optimizer,
                "--lr": lr,
                "--pooling": pooling,
                "--precision": precision,
                "--seamless": True if seamless else None,
                "--progression": True if progression else None,
                "--model": None if model == "vgg16" else model,
                "--weights": weights,
                "--dry-run": True if dry_run else None,
            },
        )
        _efros_leung(
            ctx, picture, out_path, size, style_size, window, levels, seed, json_out, quiet
        )
        return
    _only_for(method, {"--window": window, "--levels": levels})
    from convscope.synthesize.recipes.texture import (
        plan_texture,
        texture,
        texture_panel,
        texture_progression,
    )

    cm = open_model(model, weights, device)
    names = list(STYLE_LAYERS) if layers is None else parse_layers(layers)
    options: dict[str, Any] = dict(size=size, style_size=style_size, seamless=seamless, seed=seed)
    for key, value in [
        ("steps", steps),
        ("optimizer", None if optimizer is None else optimizer.value),
        ("lr", lr),
        ("pooling", None if pooling is None else pooling.value),
        ("precision", None if precision is None else precision.value),
    ]:
        if value is not None:
            options[key] = value
    if dry_run:
        sets = [names[:k] for k in range(1, len(names) + 1)] if progression else [names]
        for chosen in sets:
            run = plan_texture(cm, picture, layers=chosen, **options)
            report_estimate(
                run.estimate(),
                steps=run.steps,
                what=f"texture to {chosen[-1]} ({run.precision})",
                device=str(cm.device),
            )
        return
    try:
        with progress_bar(quiet) as bar:
            if progression:
                results = texture_progression(cm, picture, layers=names, on_progress=bar, **options)
            else:
                results = [texture(cm, picture, layers=names, on_progress=bar, **options)]
    except KeyboardInterrupt:
        raise Interrupted("nothing was written; run the command again to start over.") from None
    report = [r.report() for r in results]
    text = recipe_text(ctx, recipe="texture", model=cm, seed=seed, extra={"report": report})
    if progression:
        save_synthesis(texture_panel(results), out_path, text)
    else:
        save_synthesis(results[0].image, out_path, text)
    if json_out:
        write_json(report if progression else report[0], None)
    if not quiet:
        last = results[-1]
        wrote(out_path, f"{len(results)} texture(s), style loss {last.losses.get('style', 0):.4g}")


def _efros_leung(
    ctx: typer.Context,
    picture: Any,
    out_path: Any,
    size: int,
    style_size: int | None,
    window: int | None,
    levels: int | None,
    seed: int,
    json_out: bool,
    quiet: bool,
) -> None:
    from convscope.synthesize.efros_leung import efros_leung
    from convscope.synthesize.octaves import resize
    from convscope.synthesize.recipes.style import output_size

    exemplar = picture[None]
    if style_size is not None:
        if style_size < 8:
            raise UserInputError(f"--style-size must be at least 8 pixels, got {style_size}.")
        hw = output_size((int(exemplar.shape[-2]), int(exemplar.shape[-1])), style_size)
        exemplar = resize(exemplar, hw).clamp(0.0, 1.0)
    options: dict[str, Any] = {"seed": seed}
    if window is not None:
        options["window"] = window
    if levels is not None:
        options["levels"] = levels
    try:
        with progress_bar(quiet) as bar:
            result = efros_leung(exemplar, size, on_progress=bar, **options)
    except KeyboardInterrupt:
        raise Interrupted("nothing was written; run the command again to start over.") from None
    report = {
        "method": "efros-leung",
        "size": [int(result.image.shape[-2]), int(result.image.shape[-1])],
        "window": result.window,
        "levels": result.levels,
    }
    text = recipe_text(ctx, recipe="texture", model=None, seed=seed, extra={"report": report})
    save_synthesis(result.image, out_path, text)
    if json_out:
        write_json({**report, "seconds": round(result.seconds, 3)}, None)
    if not quiet:
        wrote(out_path, f"efros-leung, {result.seconds:.1f} s")
