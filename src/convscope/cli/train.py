"""`convscope train-small`: train smallnet on a small dataset and save a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from convscope.cli.application import app
from convscope.cli.common import (
    check_outputs,
    library_constant,
    library_default,
    out,
    progress_bar,
)
from convscope.cli.options import QuietOpt, SeedOpt

TRAIN_DATASETS: tuple[str, ...] = library_constant("convscope.models.train_small", "TRAIN_DATASETS")
_TRAIN = "convscope.models.train_small:train_small"


@app.command("train-small")
def train_small_cmd(
    out_path: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Where to write the checkpoint (.safetensors); written atomically."
        ),
    ],
    dataset: Annotated[
        str, typer.Option("--dataset", "-d", help="One of " + ", ".join(TRAIN_DATASETS) + ".")
    ] = library_default(_TRAIN, "dataset"),
    epochs: Annotated[
        int, typer.Option("--epochs", min=1, help="Passes over the training split.")
    ] = library_default(_TRAIN, "epochs"),
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Images per optimizer step.")
    ] = library_default(_TRAIN, "batch_size"),
    lr: Annotated[
        float, typer.Option("--lr", min=0.0, help="Adam's initial learning rate (cosine decay).")
    ] = library_default(_TRAIN, "lr"),
    seed: SeedOpt = library_default(_TRAIN, "seed"),
    test_fraction: Annotated[
        float,
        typer.Option("--test-fraction", help="Share of the images held out for testing (0..1)."),
    ] = library_default(_TRAIN, "test_fraction"),
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=2, help="Use a seeded random subset of this many images."),
    ] = library_default(_TRAIN, "limit"),
    shift: Annotated[
        int, typer.Option("--shift", min=0, help="Random-shift augmentation in pixels (0: none).")
    ] = library_default(_TRAIN, "shift"),
    threads: Annotated[
        int | None,
        typer.Option("--threads", min=1, help="CPU threads for torch while training."),
    ] = library_default(_TRAIN, "threads"),
    quiet: QuietOpt = False,
) -> None:
    """Train smallnet (3 conv layers of 7×7) from scratch on the CPU and save its weights with
    metadata recording how they were made. Load them with `--model smallnet --weights FILE`."""
    check_outputs(out_path)
    from convscope.models.train_small import checkpoint_command, save_checkpoint, train_small

    with progress_bar(quiet) as on_progress:
        result = train_small(
            dataset,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            test_fraction=test_fraction,
            limit=limit,
            shift=shift,
            threads=threads,
            on_progress=on_progress,
        )
    path = save_checkpoint(result, out_path, command=checkpoint_command(result.config, out_path))
    cfg = result.config
    out.print(
        f"test accuracy: {result.test_accuracy:.4f} on {cfg['n_test']} held-out {cfg['dataset']} "
        f"images ({cfg['train_seconds']:.1f} s); wrote {path}",
        markup=False,
        highlight=False,
    )
