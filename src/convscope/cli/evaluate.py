"""`convscope segment` and `convscope faithfulness`: what saliency maps are good for, and how
far to trust them; and their demo section."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import torch
import typer
from PIL import Image
from rich.table import Table
from torch import Tensor

from convscope.attribute import METHODS, describe_target, make_targets, seen_images
from convscope.attribute.faithfulness import (
    BASELINES,
    RANDOM,
    FaithfulnessReport,
    SanityResult,
    curves_plot,
    deletion_insertion,
    evaluate,
    random_baseline,
    report_table,
    sanity_check,
)
from convscope.attribute.segment import check_quantiles, cutout_rgba, grabcut_segment
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
    out,
    progress_bar,
    write_json,
)
from convscope.data.files import atomic_path
from convscope.data.images import from_pil
from convscope.data.samples import load_image_or_sample, load_sample
from convscope.errors import UnknownNameError, UserInputError, WeightsUnavailableError
from convscope.render.grids import image_grid, titled
from convscope.render.heatmaps import heatmap_overlay
from convscope.render.html import Figure, Section

if TYPE_CHECKING:
    from convscope.cli.demo import DemoContext

__all__ = [
    "evaluation_demo_section",
    "faithfulness_cmd",
    "on_checkerboard",
    "segment_cmd",
]

DEFAULT_MODEL = "efficientnet_lite0"
DEFAULT_FAITHFULNESS_METHODS = "occlusion,gradient,guided,gradcam"

TargetOpt = Annotated[
    str | None,
    typer.Option(
        "--target", "-t", help="Class name (fuzzy) or index. Default: each image's top class."
    ),
]


def _method_names(spec: str, option: str) -> list[str]:
    names = list(dict.fromkeys(s.strip().lower() for s in spec.split(",") if s.strip()))
    if not names:
        raise UserInputError(f"{option} needs at least one method, e.g. gradient,gradcam.")
    for n in names:
        if n not in METHODS:
            raise UnknownNameError("method", n, METHODS)
    return names


def _check_outputs(paths: Sequence[Path | None]) -> None:
    """One-sentence errors for outputs that cannot be written, before any work is done."""
    given = [p for p in paths if p is not None]
    resolved = [p.resolve() for p in given]
    if len(set(resolved)) < len(resolved):
        raise UserInputError("the output files must be different files.")
    for p in given:
        if not p.parent.exists():
            raise UserInputError(f"Cannot write {p}: the folder {p.parent} does not exist.")
        if p.is_dir():
            raise UserInputError(f"Cannot write {p}: it is a folder.")


@contextlib.contextmanager
def _atomic_pngs(images: Sequence[tuple[Path, Image.Image]]) -> Iterator[None]:
    """Write several PNGs so that either all of them appear or none (a failure before the
    end leaves every target as it was)."""
    with contextlib.ExitStack() as stack:
        tmps = [(stack.enter_context(atomic_path(p)), im) for p, im in images]
        for tmp, im in tmps:
            try:
                im.save(tmp, format="PNG")
            except OSError as exc:
                raise UserInputError(f"Cannot write {tmp.name}: {exc}.") from exc
        yield


def on_checkerboard(cutout: Image.Image, cell: int = 8) -> Image.Image:
    """An RGBA cut-out over a light-gray checkerboard, as image editors show transparency."""
    w, h = cutout.size
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    checks = (((yy // cell) + (xx // cell)) % 2).to(torch.uint8)
    board = (230 - 25 * checks).numpy()
    bg = Image.fromarray(board).convert("RGBA")
    bg.alpha_composite(cutout.convert("RGBA"))
    return bg.convert("RGB")


# ---- segment --------------------------------------------------------------------------------


@app.command("segment")
def segment_cmd(
    image: Annotated[str, typer.Argument(help="An image file or a sample name (e.g. coffee).")],
    out_path: Annotated[
        Path, typer.Option("--out", "-o", help="The mask PNG to write (white = object).")
    ],
    model: ModelOpt = DEFAULT_MODEL,
    target: TargetOpt = None,
    method: Annotated[
        str,
        typer.Option("--method", help=f"The saliency method: {', '.join(METHODS)}."),
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
    ] = default_of(grabcut_segment, "fg_quantile"),
    probable_fg_quantile: Annotated[
        float,
        typer.Option(
            "--probable-fg-quantile",
            help="Pixels between this quantile and --fg-quantile are probable foreground.",
        ),
    ] = default_of(grabcut_segment, "probable_fg_quantile"),
    bg_quantile: Annotated[
        float,
        typer.Option(
            "--bg-quantile", help="Pixels below this quantile of the map are sure background."
        ),
    ] = default_of(grabcut_segment, "bg_quantile"),
    iterations: Annotated[int, typer.Option("--iterations", min=1, help="GrabCut iterations.")] = (
        default_of(grabcut_segment, "iterations")
    ),
    smooth: Annotated[
        float,
        typer.Option(
            "--smooth",
            help="Blur the map before thresholding, as a fraction of the image side (0 = none).",
        ),
    ] = default_of(grabcut_segment, "smooth"),
    border: Annotated[
        int,
        typer.Option("--border", min=0, help="A band of sure background this many px wide."),
    ] = default_of(grabcut_segment, "border"),
    min_area: Annotated[
        float,
        typer.Option(
            "--min-area",
            help="Drop parts of the mask smaller than this fraction of the image (0 = keep all).",
        ),
    ] = default_of(grabcut_segment, "min_area"),
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
    check_quantiles(fg_quantile, probable_fg_quantile, bg_quantile)
    (name,) = _method_names(method, "--method")
    _check_outputs([out_path, cutout])
    img, label = load_image_or_sample(image, max_pixels=max_pixels)
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
    files = [(out_path, mask_png)]
    if cutout is not None:
        files.append((cutout, cutout_rgba(seen[0], mask)))
    with _atomic_pngs(files):
        pass
    if not quiet:
        h, w = mask.shape
        wrote = " and ".join(str(p) for p, _ in files)
        console.print(
            f"{label}: {describe_target(cm, targets[0])} by {name}; the object covers "
            f"{float(mask.float().mean()):.0%} of the {w}x{h} crop. Wrote {wrote}."
        )


# ---- faithfulness ---------------------------------------------------------------------------


def _verdict(report: FaithfulnessReport, image: str, method: str) -> str:
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
    images: Annotated[list[str], typer.Argument(help="Image files or sample names.")],
    model: ModelOpt = DEFAULT_MODEL,
    methods: Annotated[
        str,
        typer.Option("--methods", help=f"Comma-separated methods among {', '.join(METHODS)}."),
    ] = DEFAULT_FAITHFULNESS_METHODS,
    target: TargetOpt = None,
    steps: Annotated[
        int, typer.Option("--steps", min=1, help="Steps from 0 to all pixels, per curve.")
    ] = default_of(deletion_insertion, "steps"),
    baseline: Annotated[
        str,
        typer.Option(
            "--baseline",
            help="What deleted pixels become: zero (a zero model input, i.e. the mean colour "
            "the preprocessing subtracts, as in RISE), blur, or mean (the image's mean colour).",
        ),
    ] = default_of(deletion_insertion, "baseline"),
    patch: Annotated[
        int | None,
        typer.Option(
            "--patch",
            min=1,
            help="Pixels are ranked and changed in patch x patch cells (default: 1/28 of the "
            "side, 8 px at 224; 1 = single pixels).",
        ),
    ] = default_of(deletion_insertion, "patch"),
    random_maps: Annotated[
        int, typer.Option("--random-maps", min=1, help="Random maps averaged for the baseline.")
    ] = default_of(random_baseline, "maps"),
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = default_of(
        deletion_insertion, "batch_size"
    ),
    random_smooth: Annotated[
        float,
        typer.Option(
            "--random-smooth",
            help="Smoothness of the random maps: a Gaussian blur of σ = this × the side "
            "(0 = independent pixels).",
        ),
    ] = default_of(random_baseline, "smooth"),
    out_path: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the mean curves as a PNG plot.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
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
    names = _method_names(methods, "--methods")
    if baseline not in BASELINES:
        raise UnknownNameError("baseline", baseline, BASELINES)
    if not images:
        raise UserInputError("give at least one image.")
    _check_outputs([out_path])
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
        with _atomic_pngs([(out_path, plot)]):
            pass
        if not quiet:
            console.print(f"Wrote {out_path} ({plot.width}x{plot.height}).")


# ---- demo -----------------------------------------------------------------------------------

DEMO_SEGMENT_METHOD = "guided"
"""The method whose GrabCut cut-outs of the demo samples look best: the cup (and the spoon),
the cat's eyes and nose. Grad-CAM's cut-outs are coarser (7×7 maps); plain gradients' are
patchy."""


def evaluation_demo_section(ctx: DemoContext) -> Section:
    try:
        cm = ctx.model(DEFAULT_MODEL)
    except WeightsUnavailableError as exc:
        return Section("Segmentation and faithfulness", f"Skipped: {exc}")
    samples = ("coffee", "cat")
    seen = seen_images(cm, [load_sample(n) for n in samples])
    targets = make_targets(cm, seen)
    maps = METHODS[DEMO_SEGMENT_METHOD](cm, seen, targets)
    tiles: list[Tensor] = []
    labels: list[str] = []
    for name, img, m, t in zip(samples, seen, maps, targets, strict=True):
        mask = grabcut_segment(img, m)
        cut = on_checkerboard(cutout_rgba(img, mask))
        overlay = heatmap_overlay(img, m, percentile=99.0, weighted=True, alpha=0.8)
        tiles += [img, overlay, from_pil(cut)]
        labels += [f"{name}: {describe_target(cm, t)}", f"{DEMO_SEGMENT_METHOD} map", "cut-out"]
    grid = image_grid(tiles, labels=labels, ncol=3, tile=224)
    cut_fig = ctx.save(
        "segment_cutouts.png", titled(grid, f"GrabCut seeded by {DEMO_SEGMENT_METHOD}")
    )
    demo_methods = ["gradcam", "gradient"]
    report = evaluate(cm, seen[:1], demo_methods, names=["coffee"], steps=10, random_maps=2, seed=0)
    plot = curves_plot(report.curves_for("coffee"), title="EfficientNet-Lite0 · coffee")
    curves_fig = ctx.save("faithfulness_curves.png", plot)
    header, *rows = report_table(report)
    return Section(
        "Segmentation and faithfulness",
        "A saliency map says roughly where the evidence is; seeded with it, GrabCut follows "
        "the object's colour edges (`convscope segment`). Deletion and insertion curves "
        "(Petsiuk et al. 2018) test whether the map ranks pixels as the model does: removing "
        "the most salient pixels first should make the probability fall faster than for "
        "random maps (`convscope faithfulness`).",
        [
            Figure(
                cut_fig.src,
                "Guided-backprop maps seed GrabCut: the top 5 % of the (blurred) map is sure "
                "object, the bottom 30 % sure background, and GrabCut decides the rest from "
                "colour.",
            ),
            Figure(
                curves_fig.src,
                "Deleting (left: cells become ImageNet's mean colour) and inserting (right: "
                "into a blurred copy) 8 px cells of the coffee image in order of saliency; "
                "dashed: the mean of two smooth random maps.",
                wide=True,
            ),
        ],
        [header[1:], *[r[1:] for r in rows]],
    )
