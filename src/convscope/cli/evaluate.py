"""`convscope segment` and `convscope faithfulness`: what saliency maps are good for, and how
far to trust them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from convscope.cli.application import app
from convscope.cli.attribute import METHOD_NAMES, parse_methods
from convscope.cli.common import (
    check_outputs,
    console,
    library_constant,
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
    ImagesArg,
    JsonOpt,
    MaxPixelsOpt,
    ModelOpt,
    QuietOpt,
    SeedOpt,
    TargetOpt,
    WeightsOpt,
)
from convscope.errors import UnknownNameError, UserInputError

if TYPE_CHECKING:
    from convscope.attribute.faithfulness import FaithfulnessReport
    from convscope.attribute.sanity import SanityResult

__all__ = ["faithfulness_cmd", "segment_cmd"]

DEFAULT_MODEL = "efficientnet_lite0"
DEFAULT_FAITHFULNESS_METHODS = "occlusion,gradient,guided,gradcam"
BASELINES: tuple[str, ...] = library_constant("convscope.attribute.faithfulness", "BASELINES")

_GRABCUT = "convscope.attribute.segment:grabcut_segment"
_DELETION = "convscope.attribute.faithfulness:deletion_insertion"
_RANDOM = "convscope.attribute.faithfulness:random_baseline"


@app.command("segment")
def segment_cmd(
    image: ImageArg,
    out_path: Annotated[
        Path, typer.Option("--out", "-o", help="The mask PNG to write (white = object).")
    ],
    model: ModelOpt = DEFAULT_MODEL,
    target: TargetOpt = None,
    method: Annotated[
        str,
        typer.Option("--method", help=f"The saliency method: {', '.join(METHOD_NAMES)}."),
    ] = "gradient",
    cutout: Annotated[
        Path | None,
        typer.Option("--cutout", help="Also write the object with a transparent background."),
    ] = None,
    fg_quantile: Annotated[
        float,
        typer.Option(
            "--fg-quantile", help="Pixels above this quantile of the map are sure foreground."
        ),
    ] = library_default(_GRABCUT, "fg_quantile"),
    probable_fg_quantile: Annotated[
        float,
        typer.Option(
            "--probable-fg-quantile",
            help="Pixels between this quantile and --fg-quantile are probable foreground.",
        ),
    ] = library_default(_GRABCUT, "probable_fg_quantile"),
    bg_quantile: Annotated[
        float,
        typer.Option(
            "--bg-quantile", help="Pixels below this quantile of the map are sure background."
        ),
    ] = library_default(_GRABCUT, "bg_quantile"),
    iterations: Annotated[int, typer.Option("--iterations", min=1, help="GrabCut iterations.")] = (
        library_default(_GRABCUT, "iterations")
    ),
    smooth: Annotated[
        float,
        typer.Option(
            "--smooth",
            help="Blur the map before thresholding, as a fraction of the image side (0 = none).",
        ),
    ] = library_default(_GRABCUT, "smooth"),
    border: Annotated[
        int,
        typer.Option("--border", min=0, help="A band of sure background this many px wide."),
    ] = library_default(_GRABCUT, "border"),
    min_area: Annotated[
        float,
        typer.Option(
            "--min-area",
            help="Drop parts of the mask smaller than this fraction of the image (0 = keep all).",
        ),
    ] = library_default(_GRABCUT, "min_area"),
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    max_pixels: MaxPixelsOpt = MAX_PIXELS_DEFAULT,
    quiet: QuietOpt = False,
) -> None:
    """Cut the object out of an image: a saliency map seeds GrabCut, which follows the
    object's colour edges.

    The map's top pixels (above --fg-quantile) are sure foreground, the next ones (above
    --probable-fg-quantile) probable foreground, its bottom ones (below --bg-quantile) sure
    background. The mask is the image as the model sees it (its resize and crop)."""
    from convscope.attribute import METHODS, describe_target, make_targets, seen_images
    from convscope.attribute.segment import check_quantiles, cutout_rgba, grabcut_segment
    from convscope.data.images import save_pngs
    from convscope.data.samples import load_image_or_sample

    check_quantiles(fg_quantile, probable_fg_quantile, bg_quantile)
    (name,) = parse_methods(method)
    check_outputs(out_path, cutout)
    img, label = load_image_or_sample(image, max_pixels=max_pixels)
    import torch
    from PIL import Image

    cm = open_model(model, weights, device, seed)
    seen = seen_images(cm, img)
    targets = make_targets(cm, seen, target)
    maps = METHODS[name](cm, seen, targets)
    mask = grabcut_segment(
        seen[0],
        maps[0],
        fg_quantile=fg_quantile,
        probable_fg_quantile=probable_fg_quantile,
        bg_quantile=bg_quantile,
        iterations=iterations,
        smooth=smooth,
        border=border,
        min_area=min_area,
        seed=seed,
    )
    mask_png = Image.fromarray(mask.to(torch.uint8).mul(255).numpy())
    files: list[tuple[Path, Image.Image]] = [(out_path, mask_png)]
    if cutout is not None:
        files.append((cutout, cutout_rgba(seen[0], mask)))
    save_pngs(files)
    if not quiet:
        h, w = mask.shape
        wrote = " and ".join(str(p) for p, _ in files)
        console.print(
            f"{label}: {describe_target(cm, targets[0])} by {name}; the object covers "
            f"{float(mask.float().mean()):.0%} of the {w}x{h} crop. Wrote {wrote}."
        )


def _verdict(report: FaithfulnessReport, image: str, method: str) -> str:
    from convscope.attribute.faithfulness import RANDOM

    rows = {r.method: r for r in report.rows if r.image == image}
    mine, rand = rows[method], rows[RANDOM]
    dele = mine.deletion_auc < rand.deletion_auc
    ins = mine.insertion_auc > rand.insertion_auc
    if dele and ins:
        return "[green]both[/]"
    if dele:
        return "[yellow]deletion[/]"
    if ins:
        return "[yellow]insertion[/]"
    return "[red]neither[/]"


def _print_report(report: FaithfulnessReport) -> None:
    from convscope.attribute.faithfulness import RANDOM, report_table

    table = Table(
        title=f"Deletion / insertion ({report.steps} steps, deletion baseline: {report.baseline})",
        caption="Deletion AUC: lower is better. Insertion AUC: higher is better.",
    )
    header, *rows = report_table(report, mean=True)
    for h in header:
        table.add_column(h, justify="right" if "AUC" in h else "left")
    table.add_column("beats random")
    for row in rows:
        image, method = row[0], row[1]
        verdict = "" if method == RANDOM or image == "mean" else _verdict(report, image, method)
        style = "dim" if method == RANDOM else None
        table.add_row(*row, verdict, style=style)
    out.print(table)


def _print_sanity(results: Sequence[SanityResult], image: str) -> None:
    for res in results:
        table = Table(title=f"Cascading randomization of {res.method} on {image}")
        table.add_column("step", justify="right")
        table.add_column("randomized (output first)")
        table.add_column("Spearman", justify="right")
        table.add_column("SSIM", justify="right")
        for k, step in enumerate(res.steps, 1):
            ssim = "" if step.ssim is None else f"{step.ssim:.3f}"
            table.add_row(str(k), step.label, f"{step.spearman:.3f}", ssim)
        out.print(table)
    for res in results:
        tail = (
            f"(Spearman {res.final_spearman:.2f} with every layer randomized; threshold "
            f"{res.threshold}; mean over the cascade {res.mean_spearman:.2f})."
        )
        if res.insensitive:
            out.print(f"[red]{res.method}: insensitive to the model[/] {tail}")
        else:
            out.print(f"[green]{res.method}: changes with the model[/] {tail}")


@app.command("faithfulness")
def faithfulness_cmd(
    images: ImagesArg,
    model: ModelOpt = DEFAULT_MODEL,
    methods: Annotated[
        str,
        typer.Option("--methods", help=f"Comma-separated methods among {', '.join(METHOD_NAMES)}."),
    ] = DEFAULT_FAITHFULNESS_METHODS,
    target: TargetOpt = None,
    steps: Annotated[
        int, typer.Option("--steps", min=1, help="Steps from 0 to all pixels, per curve.")
    ] = library_default(_DELETION, "steps"),
    baseline: Annotated[
        str,
        typer.Option(
            "--baseline",
            help="What deleted pixels become: zero (a zero model input, i.e. the mean colour "
            "the preprocessing subtracts, as in RISE), blur, or mean (the image's mean colour).",
        ),
    ] = library_default(_DELETION, "baseline"),
    patch: Annotated[
        int | None,
        typer.Option(
            "--patch",
            min=1,
            help="Pixels are ranked and changed in patch x patch cells (default: 1/28 of the "
            "side, 8 px at 224; 1 = single pixels).",
        ),
    ] = library_default(_DELETION, "patch"),
    random_maps: Annotated[
        int, typer.Option("--random-maps", min=1, help="Random maps averaged for the baseline.")
    ] = library_default(_RANDOM, "maps"),
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = library_default(
        _DELETION, "batch_size"
    ),
    random_smooth: Annotated[
        float,
        typer.Option(
            "--random-smooth",
            help="Smoothness of the random maps: a Gaussian blur of σ = this × the side "
            "(0 = independent pixels).",
        ),
    ] = library_default(_RANDOM, "smooth"),
    out_path: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the mean curves as a PNG plot.")
    ] = None,
    as_json: JsonOpt = False,
    sanity: Annotated[
        bool,
        typer.Option(
            "--sanity",
            help="Also run the cascading model-randomization test on the first image.",
        ),
    ] = False,
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    max_pixels: MaxPixelsOpt = MAX_PIXELS_DEFAULT,
    quiet: QuietOpt = False,
) -> None:
    """How faithful are saliency maps? Deletion and insertion AUCs per method, against maps
    of random noise.

    Deletion removes the most salient pixels first (replacing them with --baseline) and
    follows the target's probability: a faithful map makes it fall fast (low AUC). Insertion
    puts pixels back into a blurred image in the same order: a faithful map makes it rise fast
    (high AUC). With --sanity, the model's layers are re-initialized one block at a time from
    the output down (Adebayo et al. 2018); a method whose maps keep a Spearman correlation
    ≥ 0.5 with the original is flagged as insensitive to the model."""
    from convscope.attribute import make_targets, seen_images
    from convscope.attribute.faithfulness import evaluate
    from convscope.attribute.sanity import sanity_check
    from convscope.data.images import save_pngs
    from convscope.data.samples import load_image_or_sample
    from convscope.render.curves import curves_plot

    names = parse_methods(methods, "--methods")
    if baseline not in BASELINES:
        raise UnknownNameError("baseline", baseline, BASELINES)
    if not images:
        raise UserInputError("give at least one image.")
    check_outputs(out_path)
    loaded = [load_image_or_sample(spec, max_pixels=max_pixels) for spec in images]
    labels = [label for _, label in loaded]
    if len(set(labels)) < len(labels):
        labels = [f"{i}:{label}" for i, label in enumerate(labels)]
    cm = open_model(model, weights, device, seed)
    seen = [seen_images(cm, img)[0] for img, _ in loaded]  # sizes may differ without a crop
    with progress_bar(quiet or as_json) as on_progress:
        report = evaluate(
            cm,
            seen,
            names,
            target=target,
            names=labels,
            steps=steps,
            baseline=baseline,  # type: ignore[arg-type]
            patch=patch,
            batch_size=batch_size,
            random_maps=random_maps,
            random_smooth=random_smooth,
            seed=seed,
            on_progress=on_progress,
        )
    results: list[SanityResult] = []
    if sanity:
        first_target = make_targets(cm, seen[0][None], target)[0]
        results = [sanity_check(cm, seen[0], n, first_target, seed=seed) for n in names]
    plot = None
    if out_path is not None:
        plot = curves_plot(
            report.mean_curves(),
            title=f"{cm.name} · {labels[0]}"
            if len(labels) == 1
            else f"{cm.name} · mean over {len(labels)} images",
        )
    if as_json:
        data: dict[str, Any] = {"model": cm.name, **report.to_dict()}
        if sanity:
            data["sanity"] = {"image": labels[0], "results": [r.to_dict() for r in results]}
        write_json(data, None)
    else:
        _print_report(report)
        if sanity:
            _print_sanity(results, labels[0])
    if plot is not None and out_path is not None:
        save_pngs([(out_path, plot)])
        if not quiet:
            console.print(f"Wrote {out_path} ({plot.width}x{plot.height}).")
