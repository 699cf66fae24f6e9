"""`convscope demo`: the main job on the offline defaults, written as an HTML gallery.

Each section is a function `(DemoContext) -> Section`, listed in `_sections()`; each
capability's CLI module provides its own. The page and its PNGs are written atomically into `--out`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from convscope.cli.app import app
from convscope.cli.common import DeviceOpt, QuietOpt, SeedOpt, console
from convscope.data.files import atomic_write_text
from convscope.data.images import save_png
from convscope.data.samples import load_sample
from convscope.errors import UserInputError, WeightsUnavailableError
from convscope.models import ConvModel, load_model
from convscope.probe import capture, layers
from convscope.render.grids import image_grid, titled
from convscope.render.html import Figure, Section, gallery_html
from convscope.render.maps import channel_tiles

CLASSIFY_SAMPLES = ("coffee", "cat", "flower", "china", "rocket", "hopper", "astronaut")


@dataclass
class DemoContext:
    out: Path
    device: torch.device | str
    _models: dict[str, ConvModel] = field(default_factory=dict)

    def model(self, name: str) -> ConvModel:
        if name not in self._models:
            self._models[name] = load_model(name, device=self.device)
        return self._models[name]

    def save(self, name: str, image: object) -> Figure:
        save_png(image, self.out / name)  # type: ignore[arg-type]
        return Figure(name)


def _classification(ctx: DemoContext) -> Section:
    cm = ctx.model("efficientnet_lite0")
    images = [load_sample(n) for n in CLASSIFY_SAMPLES]
    preds = cm.classify(images, top=3)
    crops = [cm.preprocess.geometry(im) for im in images]  # what the model sees, (3, 224, 224)
    labels = [f"{p[0].name} {p[0].prob:.0%}" for p in preds]
    grid = image_grid(crops, labels=labels, ncol=4, tile=224)
    fig = ctx.save("classify.png", titled(grid, "EfficientNet-Lite0 · top-1 on bundled samples"))
    table: list[list[str]] = [["sample", "1st", "2nd", "3rd"]]
    for name, ps in zip(CLASSIFY_SAMPLES, preds, strict=True):
        table.append([name, *(f"{p.name} ({p.prob:.2f})" for p in ps)])
    return Section(
        "Classification",
        "An ImageNet classifier that ships offline (EfficientNet-Lite0, TF-SAME padding, its "
        "own preprocessing) on the images bundled with scikit-image, scikit-learn and "
        "matplotlib.",
        [Figure(fig.src, "Top-1 class and probability for each sample.", wide=True)],
        table,
    )


def _activations(ctx: DemoContext) -> Section:
    figures = []
    try:
        vgg = ctx.model("vgg16")
    except WeightsUnavailableError as exc:
        return Section("Activation maps", f"Skipped: {exc}")
    image = load_sample("cat")
    x = vgg.prepare(image)  # (1, 3, 224, 224)
    names = ["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"]
    acts = capture(vgg, x, names)
    for name in names:
        act = acts[name][0]  # (C, H, W)
        # The 24 most active channels, so the grid is not mostly black.
        order = act.mean(dim=(1, 2)).argsort(descending=True)[:24].tolist()
        tiles = channel_tiles(act, channels=order, scaling="channel")
        grid = image_grid(list(tiles), ncol=8, tile=112, labels=[f"ch {c}" for c in order])
        c, h, w = act.shape
        fig = ctx.save(f"act_{name}.png", titled(grid, f"VGG16 {name} · {c} x {h} x {w}"))
        figures.append(
            Figure(
                fig.src,
                f"{name}: the 24 channels with the highest mean, each scaled to its "
                "own min..max (per-channel scaling).",
            )
        )
    crop = vgg.preprocess.geometry(image)
    fig = ctx.save("act_input.png", image_grid([crop], tile=224, labels=["input (224 x 224)"]))
    figures.insert(0, Figure(fig.src, "The input, as VGG16's preprocessing crops it."))
    return Section(
        "Activation maps",
        "What the original (Caffe) VGG16 computes on the cat, layer by layer: early layers "
        "respond to edges and colours at full resolution, late layers to parts at 14×14.",
        figures,
    )


def _layer_table(ctx: DemoContext) -> Section:
    try:
        vgg = ctx.model("vgg16")
    except WeightsUnavailableError as exc:
        return Section("Layers", f"Skipped: {exc}")
    rows: list[list[str]] = [["dotted name", "alias", "type", "output at 224"]]
    for info in layers(vgg, 224):
        if info.alias is None:
            continue
        rows.append([info.name, info.alias, info.type, "×".join(map(str, info.shape or ()))])
    return Section(
        "Layers",
        "Every layer can be named by torch's dotted name or by its alias; "
        "`convscope layers vgg16` prints this table.",
        table=rows,
    )


def _sections() -> list[tuple[str, Callable[[DemoContext], Section]]]:
    from convscope.cli.attribute import attribution_demo_section
    from convscope.cli.evaluate import evaluation_demo_section
    from convscope.cli.features import features_demo_section
    from convscope.cli.filters import activations_demo_section, filters_demo_section
    from convscope.cli.patches import top_patches_demo_section

    return [
        ("classification", _classification),
        ("filters", filters_demo_section),
        ("activation maps", _activations),
        ("activation scaling", activations_demo_section),
        ("feature space", features_demo_section),
        ("top patches", top_patches_demo_section),
        ("attribution", attribution_demo_section),
        ("segmentation and faithfulness", evaluation_demo_section),
        ("layer table", _layer_table),
    ]


@app.command("demo")
def demo_cmd(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder to write index.html and PNGs into.")
    ] = Path("convscope-demo"),
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Run the main job on the offline defaults: a gallery of what convscope can do."""
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} exists and is not a folder.")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    ctx = DemoContext(out=out, device=device)
    sections: list[Section] = []
    start = time.perf_counter()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
    ) as progress:
        sections_to_run = _sections()
        task = progress.add_task("demo", total=len(sections_to_run))
        for label, section in sections_to_run:
            progress.update(task, description=label)
            sections.append(section(ctx))
            progress.advance(task)
    elapsed = time.perf_counter() - start
    sources = "; ".join(f"{m.name}: {m.source}" for m in ctx._models.values())
    page = gallery_html(
        "convscope demo",
        "Seeing inside convolutional networks, on offline models and bundled images.",
        sections,
        footer=f"Generated by convscope in {elapsed:.0f} s. Weights — {sources}.",
    )
    atomic_write_text(out / "index.html", page)
    if not quiet:
        console.print(f"Wrote {out / 'index.html'} in {elapsed:.0f} s.")
