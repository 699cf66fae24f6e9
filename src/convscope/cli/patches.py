"""`convscope top-patches`: maximally activating patches over a dataset."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from convscope.cli.application import app
from convscope.cli.common import (
    check_checkpoint_seconds,
    check_outputs,
    console,
    library_default,
    open_model,
    progress_bar,
    resume_notice,
)
from convscope.cli.options import (
    MAX_PIXELS_DEFAULT,
    CheckpointSecondsOpt,
    DatasetArg,
    DeviceOpt,
    LimitOpt,
    MaxPixelsOpt,
    ModelOpt,
    OutPngOpt,
    QuietOpt,
    SeedOpt,
    WeightsOpt,
)
from convscope.errors import Interrupted, UserInputError

__all__ = ["state_path", "top_patches_cmd"]

_SCAN = "convscope.inspect.scan:scan_top_activations"


def state_path(out: Path, rank: int, world: int) -> Path:
    """The hidden file where a scan into `out` keeps its state, for `--resume`."""
    suffix = f".rank{rank}" if world > 1 else ""
    return out.with_name(f".{out.name}.scan-state{suffix}.safetensors")


def _remove_state(state: Path) -> None:
    """Remove a finished scan's state file, and any temporary copy of it that a save killed
    mid-way (kill -9) left behind (`.NAME.XXXX.tmp.safetensors`, see `atomic_path`)."""
    head, tail = f".{state.name}.", f".tmp{state.suffix}"
    with contextlib.suppress(OSError):
        for p in [state, *state.parent.iterdir()]:
            if p == state or (p.name.startswith(head) and p.name.endswith(tail)):
                with contextlib.suppress(OSError):
                    p.unlink()


@app.command("top-patches")
def top_patches_cmd(
    dataset: DatasetArg,
    out: OutPngOpt,
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
    k: Annotated[int, typer.Option("--k", min=1, help="Patches per channel.")] = library_default(
        _SCAN, "k"
    ),
    guided: Annotated[
        bool, typer.Option("--guided", help="Add each patch's guided-backprop image.")
    ] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = library_default(
        _SCAN, "batch_size"
    ),
    precision: Annotated[
        str, typer.Option("--precision", help="fp32 (exact) or bf16 (faster on CPUs with BF16).")
    ] = library_default(_SCAN, "precision"),
    limit: LimitOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted scan.")] = False,
    checkpoint_seconds: CheckpointSecondsOpt = library_default(_SCAN, "checkpoint_seconds"),
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
    if precision not in ("fp32", "bf16"):
        raise UserInputError(f"--precision must be fp32 or bf16, got {precision!r}.")
    check_checkpoint_seconds(checkpoint_seconds)
    check_outputs(out, save_topk)  # every output, before any work
    from convscope.data.datasets import good_items, load_dataset
    from convscope.data.files import atomic_paths
    from convscope.data.images import save_png
    from convscope.data.stream import save_tensors
    from convscope.inspect.activations import parse_channels
    from convscope.inspect.patches import top_patches_figure
    from convscope.inspect.scan import distributed_context, scan_top_activations
    from convscope.probe import capture

    rank, world = distributed_context()
    data = load_dataset(dataset, max_pixels=max_pixels)
    cm = open_model(model, weights, device, seed)
    name = layer or cm.default_layer
    if name is None:
        raise UserInputError(f"model {cm.name} has no default layer; pass --layer.")
    cm.resolve(name)
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
    state = state_path(out, rank, world)
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
                checkpoint_seconds=checkpoint_seconds,
                rank=rank,
                world=world,
                on_progress=resume_notice(
                    on_progress, show=not quiet and rank == 0, share=world > 1
                ),
            )
    except KeyboardInterrupt:
        if not state.is_file():
            raise Interrupted("nothing was saved yet.") from None
        raise Interrupted(
            f"the scan is saved in {state}; run the same command with --resume to continue."
        ) from None
    scanned = top.seen  # images that contributed
    if rank == 0:
        fig = top_patches_figure(cm, data, name, top, chosen, guided=guided)
        with atomic_paths([p for p in (out, save_topk) if p is not None]) as tmps:
            save_png(fig, tmps[0])
            if save_topk is not None:
                meta = {"model": cm.name, "layer": cm.resolve(name), "dataset": dataset}
                save_tensors(top.tensors(), tmps[1], meta)
        total = len(indices) if indices is not None else len(data)
        if not quiet:
            console.print(
                f"Scanned {scanned} of {total} images ({total - scanned} unreadable, "
                f"skipped); wrote {out}."
            )
    _remove_state(state)
