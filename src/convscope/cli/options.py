"""The option and argument declarations that several commands share, declared once.

Defaults that belong to the library are read from it (`library_default`), never restated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from convscope.cli.common import library_constant

__all__ = [
    "MAX_PIXELS_DEFAULT",
    "CheckpointSecondsOpt",
    "DatasetArg",
    "DeviceOpt",
    "ImageArg",
    "ImagesArg",
    "JsonOpt",
    "LimitOpt",
    "MaxPixelsOpt",
    "ModelOpt",
    "OutPngOpt",
    "QuietOpt",
    "ResumeOpt",
    "SeedOpt",
    "TargetOpt",
    "WeightsOpt",
]

MAX_PIXELS_DEFAULT: int = library_constant("convscope.data.images", "DEFAULT_MAX_PIXELS")

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Registry name (see `convscope models`), file.py:factory, package.module:attr, "
        "or a TorchScript file.",
    ),
]
WeightsOpt = Annotated[
    str | None,
    typer.Option(
        "--weights",
        help="DEFAULT (torchvision download), random, or a local state-dict file "
        "(.safetensors, or a torch file read with weights_only). Default: the model's own.",
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
MaxPixelsOpt = Annotated[
    int,
    typer.Option(
        "--max-pixels",
        min=1,
        help="Refuse images with more pixels than this (a decompression-bomb guard).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
TargetOpt = Annotated[
    str | None,
    typer.Option(
        "--target",
        "-t",
        help="A class name or index. Names match case-insensitively, by a whole name, one of "
        "its comma-separated synonyms or a unique prefix; a misspelling gets suggestions. "
        "Default: each image's top prediction.",
    ),
]
OutPngOpt = Annotated[Path, typer.Option("--out", "-o", help="The PNG file to write.")]
ImageArg = Annotated[
    str, typer.Argument(help="An image file or a sample name (see `convscope samples`).")
]
ImagesArg = Annotated[
    list[str], typer.Argument(help="Image files or sample names (see `convscope samples`).")
]
DatasetArg = Annotated[
    str,
    typer.Argument(
        help="A folder of images (sub-folders are classes), or a built-in dataset (see "
        "`convscope samples`)."
    ),
]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue an interrupted run into the same --out.")
]
LimitOpt = Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N images.")]
CheckpointSecondsOpt = Annotated[
    float,
    typer.Option(
        "--checkpoint-seconds",
        help="Save the finished work at least this often, so a killed run loses at most that.",
    ),
]
