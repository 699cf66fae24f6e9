"""`convscope visualize`: the image that most excites a class, a channel or a unit."""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer

from convscope.cli.application import app
from convscope.cli.common import check_outputs, library_default, open_model, progress_bar
from convscope.cli.options import DeviceOpt, ModelOpt, OutPngOpt, QuietOpt, SeedOpt, WeightsOpt
from convscope.cli.synthesis import (
    DryRunOpt,
    ResumeOpt,
    recipe_text,
    report_estimate,
    save_synthesis,
    state_path,
    wrote,
)
from convscope.errors import Interrupted, UserInputError

__all__ = ["parse_neuron", "visualize_cmd"]

_VISUALIZE = "convscope.synthesize.recipes.visualize:visualize"
PRESET_NAMES: tuple[str, ...] = ("simonyan", "yosinski", "lucid")


def parse_neuron(spec: str | None) -> tuple[int, int] | str | None:
    """ "3,5" → (3, 5); "center" → "center"; None → None."""
    if spec is None:
        return None
    if spec.strip().lower() in ("center", "centre"):
        return "center"
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise UserInputError(f"--neuron must be y,x (two whole numbers) or center, got {spec!r}.")
    return int(parts[0]), int(parts[1])


@app.command("visualize")
def visualize_cmd(
    ctx: typer.Context,
    out: OutPngOpt,
    model: ModelOpt = "efficientnet_lite0",
    cls: Annotated[
        str | None,
        typer.Option(
            "--class",
            help="A class name (as for --target elsewhere) or index: the image that the "
            "model scores highest for it.",
        ),
    ] = None,
    layer: Annotated[
        str | None, typer.Option("--layer", "-l", help="The layer of --channel(s).")
    ] = None,
    channel: Annotated[
        int | None, typer.Option("--channel", "-c", help="Visualize this channel of --layer.")
    ] = None,
    neuron: Annotated[
        str | None,
        typer.Option(
            "--neuron", help="With --channel: one unit, at y,x of the layer's output, or center."
        ),
    ] = None,
    channels: Annotated[
        str | None,
        typer.Option(
            "--channels",
            help="One image per channel of --layer, in one batched run: e.g. 0-15 or 3,7,9.",
        ),
    ] = None,
    preset: Annotated[
        str,
        typer.Option(
            "--preset",
            help="simonyan (Simonyan et al. 2014, CS231n's settings), yosinski (Yosinski et "
            "al. 2015's best setting) or lucid (Olah et al. 2017).",
        ),
    ] = library_default(_VISUALIZE, "preset"),
    steps: Annotated[
        int | None, typer.Option("--steps", help="Steps (default: the preset's).")
    ] = None,
    size: Annotated[
        int | None,
        typer.Option("--size", help="Image side in pixels (default: the model's input size)."),
    ] = None,
    batch: Annotated[
        int, typer.Option("--batch", help="How many images of the same target.")
    ] = library_default(_VISUALIZE, "batch"),
    diversity: Annotated[
        float,
        typer.Option(
            "--diversity",
            help="Weight of the diversity term (Olah et al. 2017) that pushes --batch images "
            "apart.",
        ),
    ] = library_default(_VISUALIZE, "diversity_weight"),
    lr: Annotated[
        float | None, typer.Option("--lr", help="Learning rate (default: the preset's).")
    ] = None,
    norm_percentile: Annotated[
        float,
        typer.Option(
            "--norm-percentile",
            help="yosinski: zero the pixels whose colour norm is below this percentile each "
            "step (0: off, the best setting's).",
        ),
    ] = library_default(_VISUALIZE, "norm_percentile"),
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = library_default(_VISUALIZE, "seed"),
    resume: ResumeOpt = False,
    dry_run: DryRunOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Class and neuron visualization by gradient ascent on the pixels: the image the model
    responds to most, for a class, a channel, or one unit.

    The PNG records its recipe (`convscope reproduce` runs it again). With --batch N
    --diversity W, N different images of one target; with --channels, one image per channel,
    side by side."""
    from convscope.inspect.activations import parse_channels
    from convscope.synthesize.recipes.visualize import (
        layer_shape,
        plan_visualize,
        visualize,
    )

    if preset not in PRESET_NAMES:
        from convscope.errors import UnknownNameError

        raise UnknownNameError("preset", preset, PRESET_NAMES)
    check_outputs(out)
    position = parse_neuron(neuron)
    cm = open_model(model, weights, device)
    chosen = None
    if channels is not None:
        if layer is None:
            raise UserInputError("--channels needs --layer.")
        cm.resolve(layer)
        side = size or cm.preprocess.crop or cm.preprocess.resize or 128
        width = layer_shape(cm, layer, (side, side))[1]
        chosen = parse_channels(channels, width, layer=layer)
    target: str | int | None = cls
    options = dict(
        target=target,
        layer=layer,
        channel=channel,
        neuron=position,
        channels=chosen,
        preset=preset,
        steps=steps,
        size=size,
        batch=batch,
        diversity_weight=diversity,
        lr=lr,
        norm_percentile=norm_percentile,
        seed=seed,
    )
    if dry_run:
        run, _ = plan_visualize(cm, **options)  # type: ignore[arg-type]
        report_estimate(
            run.estimate(), steps=run.steps, what=f"visualize ({preset})", device=str(cm.device)
        )
        return
    state = state_path(out)
    if resume and not state.exists():
        raise UserInputError(f"there is nothing to resume: {state} does not exist.")
    try:
        with progress_bar(quiet) as bar:
            result = visualize(
                cm,
                checkpoint=state,
                resume=resume,
                on_progress=bar,
                **options,  # type: ignore[arg-type]
            )
    except KeyboardInterrupt:
        raise Interrupted(
            f"the run is saved in {state}; run the same command with --resume to continue."
        ) from None
    picture = _picture(result.images, chosen, result.target_probability)
    text = recipe_text(
        ctx,
        recipe="visualize",
        model=cm,
        seed=seed,
        extra={"objective": result.objective, "steps_done": result.steps},
    )
    save_synthesis(picture, out, text)
    with contextlib.suppress(OSError):
        state.unlink()
    if not quiet:
        probs = result.target_probability
        note = f"p(target) {max(probs):.3f}" if probs else f"{result.steps} steps"
        wrote(out, note)


def _picture(images: object, channels: list[int] | None, probs: list[float] | None) -> object:
    """One image as it is; a batch as a grid (labelled by channel or probability)."""
    from torch import Tensor

    from convscope.render.grids import image_grid

    assert isinstance(images, Tensor)
    if images.shape[0] == 1:
        return images[0]
    labels = None
    if channels is not None:
        labels = [f"ch {c}" for c in channels]
    elif probs is not None:
        labels = [f"p={p:.3f}" for p in probs]
    side = int(max(images.shape[-2:]))
    return image_grid(list(images), labels=labels, tile=side)
