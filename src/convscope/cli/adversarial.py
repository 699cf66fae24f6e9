"""`convscope adversarial`: an image the model gets wrong that looks unchanged (PGD)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from convscope.cli.application import app
from convscope.cli.common import (
    check_outputs,
    console,
    library_default,
    open_model,
    out,
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
from convscope.cli.synthesis import (
    DryRunOpt,
    recipe_text,
    report_estimate,
    save_synthesis,
    wrote,
)
from convscope.errors import Interrupted, UserInputError

if TYPE_CHECKING:
    from convscope.models import ConvModel
    from convscope.models.base import Prediction
    from convscope.synthesize.recipes.adversarial import AdversarialResult

__all__ = ["adversarial_cmd", "fraction_text", "parse_fraction"]

_ADVERSARIAL = "convscope.synthesize.recipes.adversarial:adversarial"
"""Left out of the recorded command: a reproduction writes only the image, and shows the
report as a table."""


def fraction_text(value: float) -> str:
    """0.00784… → "2/255" when the value is a whole number of 8-bit levels, else repr."""
    levels = value * 255
    if abs(levels - round(levels)) < 1e-9 and round(levels) >= 1:
        return f"{round(levels)}/255"
    return repr(value)


def parse_fraction(text: str, option: str) -> float:
    """ "2/255", "0.5/255" or "0.01" → the number; a one-sentence error otherwise."""
    parts = [p.strip() for p in text.split("/")]
    try:
        numbers = [float(p) for p in parts] if len(parts) <= 2 else []
    except ValueError:
        numbers = []
    if not numbers:
        raise UserInputError(
            f"{option} must be a number or a fraction such as 2/255, got {text!r}."
        )
    if len(numbers) == 2 and numbers[1] == 0:
        raise UserInputError(f"{option} divides by zero: {text!r}.")
    value = numbers[0] if len(numbers) == 1 else numbers[0] / numbers[1]
    if not math.isfinite(value):
        raise UserInputError(f"{option} must be a finite number, got {text!r}.")
    if not 0 < value <= 1:
        raise UserInputError(
            f"{option} must be in (0, 1] (in [0, 1] pixel units: 2/255 is two 8-bit levels), "
            f"got {text}."
        )
    return value


def _predictions(preds: list[Prediction]) -> list[dict[str, Any]]:
    return [{"index": p.index, "name": p.name, "prob": p.prob} for p in preds]


def _report(result: AdversarialResult, cm: ConvModel, label: str) -> dict[str, Any]:
    classes = cm.classes or ()
    target = None
    if result.target is not None:
        target = {"index": result.target, "name": classes[result.target]}
    return {
        "image": label,
        "model": cm.name,
        "target": target,
        "untargeted": result.target is None,
        "original_class": {"index": result.source, "name": classes[result.source]},
        "success": result.success,
        "steps": result.steps,
        "max_steps": result.max_steps,
        "eps": result.eps,
        "eps_levels": math.floor(result.eps * 255 + 1e-6),
        "step_size": result.step_size,
        "linf": result.linf,
        "linf_levels": result.linf_levels,
        "l2": result.l2,
        "l2_levels": result.l2_levels,
        "size": [int(result.image.shape[-1]), int(result.image.shape[-2])],
        "before": _predictions(result.before),
        "after": _predictions(result.after),
    }


def _print_report(report: dict[str, Any]) -> None:
    from rich.table import Table

    before, after = report["before"], report["after"]
    aim = "untargeted" if report["target"] is None else f"target {report['target']['name']}"
    verdict = "reached" if report["success"] else "NOT reached"
    steps = report["steps"]
    out.print(
        f"{report['image']} ({report['model']}, {aim}): {before[0]['name']} "
        f"{before[0]['prob']:.1%} → {after[0]['name']} {after[0]['prob']:.1%}, {verdict} in "
        f"{steps} step{'s' if steps != 1 else ''} of {report['max_steps']}.",
        markup=False,
        highlight=False,
    )
    out.print(
        f"L∞ {report['linf']:.5f} = {report['linf_levels']} 8-bit levels "
        f"(eps {report['eps']:.5f} = {report['eps_levels']}); L2 {report['l2']:.4f} = "
        f"{report['l2_levels']:.1f} levels, over {report['size'][0]}×{report['size'][1]} px.",
        markup=False,
        highlight=False,
    )
    table = Table(box=None, pad_edge=False)
    table.add_column("original", overflow="fold")
    table.add_column("p", justify="right")
    table.add_column("adversarial", overflow="fold")
    table.add_column("p", justify="right")
    for b, a in zip(before, after, strict=False):
        table.add_row(
            f"{b['name']} ({b['index']})",
            f"{b['prob']:.1%}",
            f"{a['name']} ({a['index']})",
            f"{a['prob']:.1%}",
        )
    out.print(table)


def _recipe(ctx: typer.Context, cm: ConvModel, seed: int, extra: dict[str, Any]) -> dict[str, str]:
    """The PNG's recipe, with a command that writes only the image (not the panel again)."""
    return recipe_text(
        ctx, recipe="adversarial", model=cm, seed=seed, extra=extra, leave_out=("panel", "as_json")
    )


@app.command("adversarial")
def adversarial_cmd(
    ctx: typer.Context,
    image: ImageArg,
    out_path: OutPngOpt,
    model: ModelOpt = "efficientnet_lite0",
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            "-t",
            help="The class to make the model see: a name (case-insensitive; a synonym or a "
            "unique prefix works) or an index. Leave it out with --untargeted.",
        ),
    ] = None,
    eps: Annotated[
        str,
        typer.Option(
            "--eps",
            help="The L∞ budget per pixel and channel in [0, 1] units, as a number or a "
            "fraction: 2/255 allows two 8-bit levels. At least 1/255.",
        ),
    ] = fraction_text(library_default(_ADVERSARIAL, "eps")),
    steps: Annotated[
        int,
        typer.Option("--steps", min=1, help="The most PGD steps; it stops at the first success."),
    ] = library_default(_ADVERSARIAL, "steps"),
    step_size: Annotated[
        str | None,
        typer.Option(
            "--step-size",
            help="The step per pixel, a number or a fraction such as 1/255 (default: eps/4).",
        ),
    ] = None,
    untargeted: Annotated[
        bool,
        typer.Option(
            "--untargeted",
            help="Only push the prediction off the original top class (no --target).",
        ),
    ] = library_default(_ADVERSARIAL, "untargeted"),
    random_start: Annotated[
        bool,
        typer.Option(
            "--random-start",
            help="Start from a random point of the eps box (Madry et al.), drawn with --seed.",
        ),
    ] = library_default(_ADVERSARIAL, "random_start"),
    min_prob: Annotated[
        float,
        typer.Option(
            "--min-prob",
            help="Go on until the target is the top-1 with at least this probability "
            "(0: stop as soon as it is the top-1).",
        ),
    ] = library_default(_ADVERSARIAL, "min_probability"),
    panel: Annotated[
        Path | None,
        typer.Option(
            "--panel",
            help="Also write the lecture's panel: original, adversarial, and their difference "
            "×10 on gray, each with its top class.",
        ),
    ] = None,
    as_json: JsonOpt = False,
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = library_default(_ADVERSARIAL, "seed"),
    max_pixels: MaxPixelsOpt = MAX_PIXELS_DEFAULT,
    dry_run: DryRunOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """An adversarial example (Madry et al.'s projected gradient descent under an L∞ budget):
    the image changed by at most --eps per pixel so that the model predicts --target (or, with
    --untargeted, anything but its original class). It stops as soon as that happens.

    --out is the adversarial image itself, 8-bit, at the size the model's preprocessing
    resizes the image to, and the attack is checked on exactly those 8-bit pixels: classify
    the PNG again and the model gives the same answer. The PNG records its recipe
    (`convscope reproduce` makes the same bytes). The report shows both top-5s and the L∞
    and L2 size of the change."""
    from convscope.data.files import atomic_paths
    from convscope.data.images import save_png
    from convscope.data.samples import load_image_or_sample
    from convscope.synthesize.recipes.adversarial import (
        adversarial,
        adversarial_panel,
        plan_adversarial,
    )

    check_outputs(out_path, panel)
    budget = parse_fraction(eps, "--eps")
    step = None if step_size is None else parse_fraction(step_size, "--step-size")
    if untargeted and target is not None:
        raise UserInputError(
            "--untargeted pushes the image off its own top class; leave --target out, or drop "
            "--untargeted to aim at the target."
        )
    if not untargeted and target is None:
        raise UserInputError("give the class to aim at with --target, or use --untargeted.")
    picture, label = load_image_or_sample(image, max_pixels=max_pixels)
    cm = open_model(model, weights, device)
    options: dict[str, Any] = dict(
        target=target,
        eps=budget,
        steps=steps,
        step_size=step,
        untargeted=untargeted,
        random_start=random_start,
        min_probability=min_prob,
        seed=seed,
    )
    if dry_run:
        run, _ = plan_adversarial(cm, picture, **options)
        what = f"adversarial (PGD, eps {fraction_text(budget)})"
        report_estimate(run.estimate(), steps=run.steps, what=what, device=str(cm.device))
        return
    try:
        with progress_bar(quiet) as bar:
            result = adversarial(cm, picture, on_progress=bar, **options)
    except KeyboardInterrupt:
        raise Interrupted("nothing was written.") from None
    report = _report(result, cm, label)
    extra = {
        "target": None if report["target"] is None else report["target"]["name"],
        "success": result.success,
        "steps_done": result.steps,
        "linf_levels": result.linf_levels,
        "prediction": result.after[0].name,
    }
    text = _recipe(ctx, cm, seed, extra)
    outputs = [out_path] if panel is None else [out_path, panel]
    with atomic_paths(outputs) as tmps:
        save_synthesis(result.image, tmps[0], text)
        if panel is not None:
            save_png(adversarial_panel(result), tmps[1])
    if as_json:
        write_json(report, None)
    else:
        _print_report(report)
    if not quiet:
        for path in outputs:
            wrote(path)
        if not result.success:
            console.print(
                f"The attack did not succeed in {result.steps} steps; try more --steps or a "
                "larger --eps."
            )
