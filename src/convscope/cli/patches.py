"""`convscope top-patches`: maximally activating patches over a dataset."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

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
from convscope.data.datasets import good_items, load_dataset
from convscope.data.images import save_png
from convscope.errors import UserInputError
from convscope.inspect.activations import parse_channels
from convscope.inspect.patches import top_patches_figure
from convscope.inspect.scan import distributed_context, scan_top_activations
from convscope.models.weights import save_safetensors_atomic
from convscope.probe import capture

if TYPE_CHECKING:
    from convscope.cli.demo import DemoContext
    from convscope.render.html import Section


def _state_path(out: Path, rank: int, world: int) -> Path:
    suffix = f".rank{rank}" if world > 1 else ""
    return out.with_name(f".{out.name}.scan-state{suffix}.safetensors")


@app.command("top-patches")
def top_patches_cmd(
    dataset: Annotated[str, typer.Argument(help="A folder of images or a built-in dataset.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The PNG to write.")],
    model: ModelOpt = "vgg16",
    layer: Annotated[
        str | None, typer.Option("--layer", "-l", help="Layer (default: the model's).")
    ] = None,
    channels: Annotated[
        str | None,
        typer.Option(
            "--channels", help="Channels to show, e.g. 0-15, 3,7,9 or all (default: first 16)."
        ),
    ] = None,
    k: Annotated[int, typer.Option("--k", min=1, help="Patches per channel.")] = default_of(
        scan_top_activations, "k"
    ),
    guided: Annotated[
        bool, typer.Option("--guided", help="Add each patch's guided-backprop image.")
    ] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = default_of(
        scan_top_activations, "batch_size"
    ),
    precision: Annotated[
        str, typer.Option("--precision", help="fp32 (exact) or bf16 (faster on CPUs with BF16).")
    ] = default_of(scan_top_activations, "precision"),
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Only the first N images.")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted scan.")] = False,
    save_topk: Annotated[
        Path | None,
        typer.Option("--save-topk", help="Also write the raw top-k table (safetensors)."),
    ] = None,
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    max_pixels: MaxPixelsOpt = MAX_PIXELS_DEFAULT,
    quiet: QuietOpt = False,
) -> None:
    """Find, for each channel of a layer, the k dataset patches that excite it most.

    One streaming pass keeps the top k (image, location) for every channel at once. Patches are
    the exact receptive fields; padding beyond the image border is drawn hatched. Under
    `torchrun`, the dataset is sharded across ranks and the results merged exactly."""
    rank, world = distributed_context()
    data = load_dataset(dataset, max_pixels=max_pixels)
    cm = open_model(model, weights, device, seed)
    name = layer or cm.default_layer
    if name is None:
        raise UserInputError(f"model {cm.name} has no default layer; pass --layer.")
    cm.resolve(name)
    if precision not in ("fp32", "bf16"):
        raise UserInputError(f"--precision must be fp32 or bf16, got {precision!r}.")
    indices = list(range(min(len(data), limit))) if limit else None
    # Check the channels before the scan, not after it: one image tells the layer's width.
    first = next(iter(good_items(data, indices or range(len(data)))), None)
    if first is None:
        raise UserInputError(f"none of the images in {dataset} could be read.")
    act = capture(cm, cm.prepare(first.image), [name])[name]  # (1, C, H, W)
    if act.dim() != 4:
        raise UserInputError(
            f"layer {name} has output shape {tuple(act.shape)}; top patches need a spatial layer."
        )
    width = int(act.shape[1])
    chosen = (
        list(range(min(16, width)))
        if channels is None
        else parse_channels(channels, width, layer=name)
    )
    state = _state_path(out, rank, world)
    if out.parent and not out.parent.exists():
        raise UserInputError(f"Cannot write {out}: the folder {out.parent} does not exist.")
    try:
        with progress_bar(quiet or rank != 0) as on_progress:
            top = scan_top_activations(
                cm,
                data,
                name,
                k=k,
                batch_size=batch_size,
                precision=precision,  # type: ignore[arg-type]
                indices=indices,
                state=state,
                resume=resume,
                rank=rank,
                world=world,
                on_progress=on_progress,
            )
    except KeyboardInterrupt:
        console.print(f"Interrupted; continue with the same command plus --resume ({state}).")
        raise
    skipped = top.seen  # images that contributed
    if rank == 0:
        fig = top_patches_figure(cm, data, name, top, chosen, guided=guided)
        if save_topk is not None:
            meta = {"model": cm.name, "layer": cm.resolve(name), "dataset": dataset}
            save_safetensors_atomic(top.tensors(), save_topk, metadata=meta)
        save_png(fig, out)
        total = len(indices) if indices is not None else len(data)
        if not quiet:
            console.print(
                f"Scanned {skipped} of {total} images ({total - skipped} unreadable, skipped); "
                f"wrote {out}."
            )
    with contextlib.suppress(OSError):
        state.unlink()


def top_patches_demo_section(ctx: DemoContext) -> Section:
    """Maximally activating patches of VGG16 relu4_3 over 64 crops of the bundled photos."""
    from convscope.data.datasets import SampleCrops
    from convscope.errors import WeightsUnavailableError
    from convscope.render.html import Figure, Section

    try:
        vgg = ctx.model("vgg16")
    except WeightsUnavailableError as exc:
        return Section("Maximally activating patches", f"Skipped: {exc}")
    data = SampleCrops(64, size=256, seed=1)
    top = scan_top_activations(vgg, data, "relu4_3", k=6, batch_size=4)
    # Channels whose six best patches are strongest on average: clear, consistent detectors.
    strongest = top.values.mean(dim=1).argsort(descending=True)[:6].tolist()
    fig = top_patches_figure(vgg, data, "relu4_3", top, strongest, guided=True, tile=88)
    saved = ctx.save("top_patches_relu4_3.png", fig)
    return Section(
        "Maximally activating patches",
        "One streaming pass over 64 crops of the bundled photos keeps, for all 512 channels of "
        "VGG16 relu4_3 at once, the six image locations that excite each channel most. Each "
        "patch is the unit's exact receptive field (92 px); beside it, guided backprop shows "
        "which of its pixels drive the neuron.",
        [Figure(saved.src, "Six channels, six patches each, with guided backprop.", wide=True)],
    )
