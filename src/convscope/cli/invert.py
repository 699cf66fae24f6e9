"""`convscope invert`: reconstruct an image from one layer's features, for several layers."""

from __future__ import annotations

from typing import Annotated

import typer

from convscope.cli.application import app
from convscope.cli.common import (
    check_outputs,
    library_default,
    open_model,
    out,
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
from convscope.cli.synthesis import DryRunOpt, recipe_text, report_estimate, save_synthesis, wrote
from convscope.errors import Interrupted

__all__ = ["invert_cmd"]

_INVERT = "convscope.synthesize.recipes.invert:invert"


@app.command("invert")
def invert_cmd(
    ctx: typer.Context,
    image: ImageArg,
    out_path: OutPngOpt,
    layers: Annotated[
        str,
        typer.Option(
            "--layers",
            "-l",
            help="The layers to invert, comma-separated, e.g. relu2_2,relu3_3,relu4_3,relu5_3.",
        ),
    ],
    model: ModelOpt = "vgg16",
    size: Annotated[
        int | None,
        typer.Option(
            "--size",
            help="Invert a SIZE×SIZE centre crop (default: the model's view of the image, "
            "224×224 for vgg16).",
        ),
    ] = None,
    steps: Annotated[int, typer.Option("--steps", help="Adam steps per layer.")] = library_default(
        _INVERT, "steps"
    ),
    lr: Annotated[
        float, typer.Option("--lr", help="Adam's learning rate (cosine schedule).")
    ] = library_default(_INVERT, "lr"),
    tv: Annotated[
        float | None,
        typer.Option(
            "--tv",
            help="λV, the weight of the normalized total variation, for every layer "
            "(default: 0.0025 × the layer's stride).",
        ),
    ] = None,
    alpha: Annotated[
        float, typer.Option("--alpha", help="λα, the weight of the normalized α-norm (α = 6).")
    ] = library_default(_INVERT, "alpha"),
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = library_default(_INVERT, "seed"),
    max_pixels: MaxPixelsOpt = MAX_PIXELS_DEFAULT,
    json_out: JsonOpt = False,
    dry_run: DryRunOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Feature inversion (Mahendran & Vedaldi 2015): for each layer, the image whose features
    there match the image's, found from a random start. Writes the lecture's panel: the
    original, then one reconstruction per layer, labelled with its PSNR and its feature error
    ||Φ(x) − Φ₀|| / ||Φ₀||. Early layers give the image back; late ones keep its layout and
    parts but lose colour and detail.

    The PNG records its recipe (`convscope reproduce` runs it again)."""
    from convscope.data.samples import load_image_or_sample
    from convscope.synthesize.recipes.invert import inversion_panel, invert, plan_invert

    check_outputs(out_path)
    names = parse_layers(layers)
    picture, _ = load_image_or_sample(image, max_pixels=max_pixels)
    cm = open_model(model, weights, device)
    options = dict(size=size, steps=steps, lr=lr, tv=tv, alpha=alpha, seed=seed)
    if dry_run:
        plan = plan_invert(cm, picture, names, **options)  # type: ignore[arg-type]
        for layer, run in zip(plan.layers, plan.runs, strict=True):
            report_estimate(
                run.estimate(), steps=run.steps, what=f"invert {layer}", device=str(cm.device)
            )
        return
    try:
        with progress_bar(quiet) as bar:
            result = invert(cm, picture, names, on_progress=bar, **options)  # type: ignore[arg-type]
    except KeyboardInterrupt:
        raise Interrupted("nothing was written; run the command again to start over.") from None
    text = recipe_text(
        ctx,
        recipe="invert",
        model=cm,
        seed=seed,
        extra={"report": result.report()},
    )
    save_synthesis(inversion_panel(result), out_path, text)
    if json_out:
        write_json(result.report(), None)
    elif not quiet:
        for r in result.layers:
            out.print(
                f"{r.layer}: PSNR {r.psnr:.2f} dB, feature error {r.feature_error:.3f}",
                markup=False,
                highlight=False,
            )
    if not quiet:
        wrote(out_path, f"{len(result.layers)} layers")
