"""`convscope dream`: DeepDream an image (guided, tiled, or as a zoom animation)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from convscope.cli.application import app
from convscope.cli.common import (
    check_outputs,
    library_constant,
    library_default,
    open_model,
    progress_bar,
    return_freed_memory,
)
from convscope.cli.options import (
    MAX_PIXELS_DEFAULT,
    DeviceOpt,
    ImageArg,
    MaxPixelsOpt,
    ModelOpt,
    QuietOpt,
    SeedOpt,
    WeightsOpt,
)
from convscope.cli.synthesis import (
    RECIPE_KEY,
    DryRunOpt,
    recipe_text,
    report_estimate,
    save_synthesis,
    wrote,
)
from convscope.errors import Interrupted, UserInputError

__all__ = ["dream_cmd"]

_DREAM = "convscope.synthesize.recipes.dream:dream"
_FRAMES = "convscope.synthesize.recipes.dream:dream_frames"
_SAVE = "convscope.synthesize.recipes.dream:save_animation"
ANIMATION_SUFFIXES: tuple[str, ...] = library_constant(
    "convscope.synthesize.recipes.dream", "ANIMATION_SUFFIXES"
)


def _check_suffix(out: Path, frames: int | None) -> None:
    """A still dream is a PNG; an animation (--frames) a GIF. Checked before any work."""
    suffix = out.suffix.lower()
    animations = ANIMATION_SUFFIXES
    if frames is None:
        if suffix != ".png":
            raise UserInputError(
                f"a dream is written as .png, not {suffix or 'a file without a suffix'}; "
                "with --frames it is an animation (.gif)."
            )
        return
    if suffix not in animations:
        raise UserInputError(
            f"the animation is written as {', '.join(animations)}, not "
            f"{suffix or 'a file without a suffix'} (MP4 would need PyAV, which convscope does "
            "not depend on)."
        )


@app.command("dream")
def dream_cmd(
    ctx: typer.Context,
    image: ImageArg,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="The PNG to write (a .gif with --frames: the animation)."),
    ],
    model: ModelOpt = "vgg16",
    layer: Annotated[
        str,
        typer.Option(
            "--layer", "-l", help="The layer whose activations grow (default: VGG16's relu4_3)."
        ),
    ] = "relu4_3",
    channels: Annotated[
        str | None,
        typer.Option(
            "--channels", help="Amplify only these channels of --layer: e.g. 0-15 or 3,7,9."
        ),
    ] = None,
    guide: Annotated[
        str | None,
        typer.Option(
            "--guide",
            help="Guided DeepDream: an image file or sample whose features the dream grows "
            "towards (each position matches the guide feature it is most like).",
        ),
    ] = None,
    octaves: Annotated[
        int, typer.Option("--octaves", help="How many scales, coarse to fine.")
    ] = library_default(_DREAM, "octaves"),
    octave_scale: Annotated[
        float,
        typer.Option(
            "--octave-scale", help="Each octave is this many times smaller than the next."
        ),
    ] = library_default(_DREAM, "octave_scale"),
    steps: Annotated[int, typer.Option("--steps", help="Steps per octave.")] = library_default(
        _DREAM, "steps"
    ),
    step: Annotated[
        float,
        typer.Option(
            "--step",
            help="The step, in 0–255 levels: the gradient over its mean absolute value, times "
            "this (google/deepdream's step_size).",
        ),
    ] = library_default(_DREAM, "step"),
    jitter: Annotated[
        int, typer.Option("--jitter", help="Random roll of up to this many pixels each step.")
    ] = library_default(_DREAM, "jitter"),
    tile: Annotated[
        int | None,
        typer.Option(
            "--tile",
            help="Process octaves larger than this in tiles of at most TILE px, at a random "
            "offset each step (bounded memory, no seams).",
        ),
    ] = None,
    size: Annotated[
        int | None,
        typer.Option("--size", help="Resize the image so that its longer side is SIZE px first."),
    ] = None,
    frames: Annotated[
        int | None,
        typer.Option(
            "--frames",
            help="Make an animation of this many frames: dream, zoom into the centre by "
            "--zoom, dream again (written as a .gif).",
        ),
    ] = None,
    zoom: Annotated[
        float, typer.Option("--zoom", help="With --frames: the zoom between frames.")
    ] = library_default(_FRAMES, "zoom"),
    fps: Annotated[
        float, typer.Option("--fps", help="With --frames: frames per second of the GIF.")
    ] = library_default(_SAVE, "fps"),
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = library_default(_DREAM, "seed"),
    max_pixels: MaxPixelsOpt = MAX_PIXELS_DEFAULT,
    dry_run: DryRunOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """DeepDream (Mordvintsev et al. 2015), as google/deepdream does it: gradient ascent on the
    squared activations of --layer, each step the gradient over its mean absolute value (1.5
    levels of 0–255), a random roll of up to 32 px, 4 octaves of 1.4 with the detail carried
    up, values clamped to range.

    The PNG records its recipe (`convscope reproduce` runs it again)."""
    from convscope.data.samples import load_image_or_sample
    from convscope.inspect.activations import parse_channels
    from convscope.synthesize.recipes.dream import (
        dream,
        dream_frames,
        plan_dream,
        save_animation,
    )

    check_outputs(out)
    _check_suffix(out, frames)
    if frames is not None and frames < 1:
        raise UserInputError(f"--frames must be at least 1, got {frames}.")
    if not zoom > 0:
        raise UserInputError(f"--zoom must be a positive number, got {zoom}.")
    if not fps > 0:
        raise UserInputError(f"--fps must be a positive number, got {fps}.")
    picture, _ = load_image_or_sample(image, max_pixels=max_pixels)
    guide_image = None
    if guide is not None:
        guide_image, _ = load_image_or_sample(guide, max_pixels=max_pixels)
    cm = open_model(model, weights, device)
    chosen = None
    if channels is not None:
        from convscope.synthesize.recipes.visualize import layer_shape

        cm.resolve(layer)
        chosen = parse_channels(channels, layer_shape(cm, layer, (64, 64))[1], layer=layer)
    options: dict[str, Any] = dict(
        channels=chosen,
        guide=guide_image,
        octaves=octaves,
        octave_scale=octave_scale,
        steps=steps,
        step=step,
        jitter=jitter,
        tile=tile,
        size=size,
    )
    if tile is not None:
        return_freed_memory()
    if dry_run:
        plan = plan_dream(cm, picture, layer, **options)
        n = 1 if frames is None else frames
        what = "dream" if frames is None else f"dream ({n} frames)"
        report_estimate(
            plan.estimate(), steps=plan.total_steps * n, what=what, device=str(cm.device)
        )
        return
    hint = "nothing was written; run the command again to start over."
    extra: dict[str, Any] = {}
    try:
        with progress_bar(quiet) as bar:
            if frames is None:
                result = dream(cm, picture, layer, seed=seed, on_progress=bar, **options)
                still = result.image[0]
                extra = {"objective": result.objective, "octaves": result.octave_sizes}
            else:
                made = list(
                    dream_frames(
                        cm,
                        picture,
                        layer,
                        frames=frames,
                        zoom=zoom,
                        seed=seed,
                        on_progress=bar,
                        **options,
                    )
                )
    except KeyboardInterrupt:
        raise Interrupted(hint) from None
    if frames is None:
        text = recipe_text(ctx, recipe="dream", model=cm, seed=seed, extra=extra)
        save_synthesis(still, out, text)
        n = len(result.octave_sizes)
        detail = f"{n} octave{'' if n == 1 else 's'}, {sum(result.octave_seconds):.1f} s"
    else:
        text = recipe_text(ctx, recipe="dream", model=cm, seed=seed, extra={"frames": frames})
        save_animation(made, out, fps=fps, comment=text[RECIPE_KEY])
        detail = f"{len(made)} frames"
    if not quiet:
        wrote(out, detail)
