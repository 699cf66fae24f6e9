"""`convscope stylenet train|apply|export`: feed-forward style networks (Johnson et al. 2016;
many styles in one network, Dumoulin et al. 2017)."""

from __future__ import annotations

import os
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from convscope.cli.application import app
from convscope.cli.common import (
    check_outputs,
    library_constant,
    library_default,
    open_model,
    out,
    parse_layers,
    progress_bar,
)
from convscope.cli.options import (
    MAX_PIXELS_DEFAULT,
    DeviceOpt,
    MaxPixelsOpt,
    ModelOpt,
    QuietOpt,
    SeedOpt,
    WeightsOpt,
)
from convscope.cli.style import Precision
from convscope.cli.synthesis import recorded_command
from convscope.errors import Interrupted, UserInputError

if TYPE_CHECKING:
    from torch import Tensor

    from convscope.stylenet import TransformerNet

__all__ = ["PREVIEW_IMAGES", "preview_path", "state_path", "stylenet_app"]

stylenet_app = typer.Typer(
    name="stylenet",
    help="Feed-forward style networks: train one (for one style or many), apply it in one "
    "pass to images, folders and videos, export it to ONNX.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(stylenet_app)

_TRAIN = "convscope.stylenet.train:train_stylenet"
STYLE_LAYERS: tuple[str, ...] = library_constant("convscope.stylenet.train", "STYLE_LAYERS")
PREVIEW_IMAGES = ("chelsea", "astronaut", "coffee", "rocket")
"""The bundled photos that --preview-every runs through the network being trained."""


class NormChoice(StrEnum):
    instance = "instance"
    batch = "batch"
    conditional = "conditional"


def state_path(out_path: Path) -> Path:
    """Where `stylenet train --out OUT` keeps its checkpoint (removed when it finishes)."""
    return out_path.with_name(f".{out_path.name}.train-state.safetensors")


def preview_path(out_path: Path, step: int) -> Path:
    """Where --preview-every writes the grid after `step` steps: beside --out."""
    return out_path.with_name(f"{out_path.stem}_preview_{step:05d}.png")


def _style_name(spec: str) -> str:
    return Path(spec).stem if ("/" in spec or "." in spec) else spec


def _square(image: Tensor, side: int) -> Tensor:
    """(3, side, side): the short side resized to `side`, the middle kept."""
    import torchvision.transforms.v2.functional as TF

    small = TF.resize(image, [side], antialias=True)
    square: Tensor = TF.center_crop(small, [side, side])
    return square.clamp(0, 1)


def _preview_grid(net: TransformerNet, images: list[Tensor], styles: int) -> Tensor:
    """(3, H, W): a row per style, a column per preview image."""
    import torch
    from torchvision.utils import make_grid

    from convscope.stylenet.apply import stylize

    rows = []
    for k in range(styles):
        rows += stylize(net, images, style=k if styles > 1 else None)
    grid: Tensor = make_grid(torch.stack(rows), nrow=len(images), padding=2, pad_value=1.0)
    return grid


@stylenet_app.command("train")
def train_cmd(
    ctx: typer.Context,
    style: Annotated[
        list[str],
        typer.Option(
            "--style",
            help="A style image (file or sample name); repeat for one network of many styles "
            "(conditional instance norm).",
        ),
    ],
    out_path: Annotated[
        Path, typer.Option("--out", "-o", help="The network file to write (.safetensors).")
    ],
    dataset: Annotated[
        str,
        typer.Option(
            "--dataset",
            "-d",
            help="The content images: a folder of images (searched recursively; COCO for real "
            "use), or a built-in dataset such as sample-crops.",
        ),
    ] = "sample-crops",
    size: Annotated[
        int, typer.Option("--size", "-s", help="The training crops' side in pixels.")
    ] = library_default(_TRAIN, "size"),
    batch: Annotated[
        int,
        typer.Option("--batch", help="Images per step (the global batch under torchrun)."),
    ] = library_default(_TRAIN, "batch"),
    steps: Annotated[int, typer.Option("--steps", help="Optimizer steps in all.")] = (
        library_default(_TRAIN, "steps")
    ),
    lr: Annotated[float, typer.Option("--lr", help="Adam's learning rate.")] = library_default(
        _TRAIN, "lr"
    ),
    content_weight: Annotated[
        float, typer.Option("--content-weight", help="The weight of the content loss.")
    ] = library_default(_TRAIN, "content_weight"),
    style_weight: Annotated[
        float, typer.Option("--style-weight", help="The weight of the style loss.")
    ] = library_default(_TRAIN, "style_weight"),
    tv_weight: Annotated[
        float, typer.Option("--tv-weight", help="The weight of the total variation loss.")
    ] = library_default(_TRAIN, "tv_weight"),
    content_layer: Annotated[
        str, typer.Option("--content-layer", help="The loss network's content layer.")
    ] = library_default(_TRAIN, "content_layer"),
    style_layers: Annotated[
        str, typer.Option("--style-layers", help="Comma-separated layers of the style loss.")
    ] = ",".join(STYLE_LAYERS),
    style_size: Annotated[
        int | None,
        typer.Option(
            "--style-size",
            help="Resize each style image's long side to this first (the style's scale; "
            "default: --size).",
        ),
    ] = None,
    norm: Annotated[
        NormChoice,
        typer.Option(
            "--norm",
            help="instance (Ulyanov et al.) or batch; with several --style, instance means "
            "conditional instance norm.",
        ),
    ] = NormChoice.instance,
    checkpoint_every: Annotated[
        int,
        typer.Option(
            "--checkpoint-every",
            help="Save the training state every N steps (and at Ctrl-C) for --resume.",
        ),
    ] = 100,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue from the state saved beside --out (the same options are needed; "
            "--steps may grow).",
        ),
    ] = False,
    preview_every: Annotated[
        int,
        typer.Option(
            "--preview-every",
            help="Every N steps write OUT_preview_NNNNN.png: four bundled photos through the "
            "network (a row per style).",
        ),
    ] = 0,
    half: Annotated[
        bool, typer.Option("--half", help="Store the weights as float16 (half the size).")
    ] = False,
    precision: Annotated[
        Precision,
        typer.Option(
            "--precision", help="The loss network's: auto (bfloat16 where native), fp32, bf16."
        ),
    ] = Precision(library_default(_TRAIN, "precision")),
    model: ModelOpt = "vgg16",
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = library_default(_TRAIN, "seed"),
    max_pixels: MaxPixelsOpt = MAX_PIXELS_DEFAULT,
    quiet: QuietOpt = False,
) -> None:
    """Train a feed-forward style network against the loss network (VGG16, the Caffe weights
    of Gatys and Johnson): content at --content-layer, style Gram matrices at --style-layers,
    and total variation. The progress bar shows the losses; the state is saved every
    --checkpoint-every steps and at Ctrl-C, and --resume continues it exactly. Under
    `torchrun`, training is data-parallel (each rank trains on its slice of every batch)."""
    from convscope.data.datasets import load_dataset
    from convscope.data.images import save_png
    from convscope.data.samples import load_image_or_sample, load_sample
    from convscope.inspect.scan import distributed_context
    from convscope.stylenet.files import load_checkpoint, save_checkpoint, save_net
    from convscope.stylenet.train import ContentImages, train_stylenet

    if out_path.suffix.lower() != ".safetensors":
        raise UserInputError(
            f"the network is written as .safetensors, not {out_path.suffix or 'nothing'}."
        )
    state = state_path(out_path)
    check_outputs(out_path, state)
    for name, value in (
        ("--checkpoint-every", checkpoint_every),
        ("--preview-every", preview_every),
    ):
        if value < 0:
            raise UserInputError(f"{name} must be 0 or more, got {value}.")
    if preview_every:
        check_outputs(
            out_path,
            *(preview_path(out_path, s) for s in range(preview_every, steps + 1, preview_every)),
        )
    kind = norm.value
    if len(style) > 1:
        if kind == "batch":
            raise UserInputError("several styles in one network need instance norm, not batch.")
        kind = "conditional"
    rank, world = distributed_context()
    style_imgs = [load_image_or_sample(s, max_pixels=max_pixels)[0] for s in style]
    names = [_style_name(s) for s in style]
    if len(set(names)) < len(names):
        raise UserInputError("two --style images have the same name; rename one.")
    contents = ContentImages(load_dataset(dataset, max_pixels=max_pixels), side=size)
    checkpoint = None
    if resume:
        if not state.is_file():
            raise UserInputError(f"there is nothing to resume: {state} does not exist.")
        checkpoint = load_checkpoint(state)
    elif state.exists():
        raise UserInputError(
            f"an interrupted run's state is in {state}; add --resume to continue it, or "
            "delete the file to start again."
        )
    if world > 1 and device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():  # one GPU per rank, as torchrun numbers them
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    cm = open_model(model, weights, device)
    previews = [_square(load_sample(n), 192) for n in PREVIEW_IMAGES]
    show = not quiet and rank == 0

    def keep(c: Any) -> None:
        save_checkpoint(c, state)

    def preview(step: int, net: TransformerNet) -> None:
        save_png(_preview_grid(net, previews, net.styles), preview_path(out_path, step))

    started = time.monotonic()
    first = [True]
    try:
        with progress_bar(not show) as bar:

            def on_progress(event: Any) -> None:
                if first[0] and show and checkpoint is not None:
                    out.print(f"Resuming at step {checkpoint.step} of {steps}.")
                first[0] = False
                bar(event)

            result = train_stylenet(
                cm,
                style_imgs,
                contents,
                size=size,
                batch=batch,
                steps=steps,
                lr=lr,
                content_weight=content_weight,
                style_weight=style_weight,
                tv_weight=tv_weight,
                content_layer=content_layer,
                style_layers=parse_layers(style_layers),
                style_size=style_size,
                norm=kind,  # type: ignore[arg-type]
                seed=seed,
                precision=precision.value,
                resume=checkpoint,
                checkpoint_every=checkpoint_every,
                on_checkpoint=keep if checkpoint_every else None,
                preview_every=preview_every,
                on_preview=preview if preview_every else None,
                on_progress=on_progress,
            )
    except KeyboardInterrupt:
        if rank == 0 and state.is_file():
            raise Interrupted(
                f"the training state is saved in {state}; run the same command with --resume "
                "to continue."
            ) from None
        raise Interrupted("nothing was saved yet.") from None
    except UserInputError:
        if rank == 0:
            raise
        raise typer.Exit(2) from None  # every rank meets the same error; rank 0 says it
    if rank != 0:
        return
    final = result.history[-1] if result.history else {}
    training = {
        **result.config,
        "command": ["convscope", "stylenet", *recorded_command(ctx)],
        "dataset": dataset,
        "world_size": world,
        "wall_seconds_this_run": round(time.monotonic() - started, 1),
        "final_losses": {k: final[k] for k in ("loss", "content", "style", "tv") if k in final},
        "skipped_contents": len(contents.skipped),
        "torch": _torch_version(),
    }
    save_net(
        result.net,
        out_path,
        styles=names,
        thumbnails=list(result.config["style_images"]),
        training=training,
        half=half,
    )
    state.unlink(missing_ok=True)
    if contents.skipped:
        sys.stderr.write(f"{len(contents.skipped)} unreadable content images were skipped.\n")
    out.print(
        f"Wrote {out_path} ({len(names)} style{'s' if len(names) > 1 else ''}, {steps} steps)."
    )


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


# ---- apply -------------------------------------------------------------------------------------
NetArg = Annotated[
    str,
    typer.Argument(
        help="A network file (.safetensors, from `stylenet train`) or a shipped network's name "
        "(four-styles)."
    ),
]
StyleOpt = Annotated[
    str | None,
    typer.Option("--style", help="The style, by name or index (for a network of many styles)."),
]
BlendOpt = Annotated[
    str | None,
    typer.Option(
        "--blend",
        help="A blend of styles, e.g. the_scream=0.3,starry_night=0.7 (names or indices; "
        "weights 0 or more, normalized to sum 1).",
    ),
]
GRID_STEPS = 5
"""--grid's steps from one style to the next (A → B in 5 images; 5 × 5 for four styles)."""


def parse_blend(spec: str) -> dict[str | int, float]:
    """ "A=0.3,B=0.7" → {"A": 0.3, "B": 0.7} (a one-sentence error when malformed)."""
    weights: dict[str | int, float] = {}
    for part in spec.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if not sep or not name or weight != weight:
            raise UserInputError(
                f"--blend takes NAME=WEIGHT pairs separated by commas, like "
                f"the_scream=0.3,starry_night=0.7; {part.strip()!r} is not one."
            )
        weights[name] = weights.get(name, 0.0) + weight
    return weights


def _choice(info: Any, style: str | None, blend: str | None) -> int | list[float] | None:
    if style is not None and blend is not None:
        raise UserInputError("give --style or --blend, not both.")
    if blend is not None:
        return list(info.blend(parse_blend(blend)))
    if style is not None:
        return int(info.index(style))
    if len(info.styles) > 1:
        raise UserInputError(
            f"this network holds {len(info.styles)} styles ({', '.join(info.styles)}); "
            "choose one with --style or mix them with --blend."
        )
    return None


def _grid_weights(info: Any, spec: str) -> tuple[Tensor, int]:
    """--grid A,B (GRID_STEPS blends from A to B) or A,B,C,D (a GRID_STEPS² square, A, B at
    the top corners, C, D at the bottom): the (n, styles) weights and the columns."""
    from convscope.stylenet.net import blend_grid

    names = [s.strip() for s in spec.split(",")]
    if len(names) not in (2, 4) or not all(names):
        raise UserInputError(f"--grid takes two or four style names, like A,B; got {spec!r}.")
    corners = [info.index(n) for n in names]
    return blend_grid(corners, len(info.styles), GRID_STEPS), GRID_STEPS


def _inputs(specs: list[str]) -> list[tuple[str, str]]:
    """Each INPUT as (kind, spec): image (a file or sample), video, or the images of a folder
    (in name order)."""
    from convscope.data.images import IMAGE_SUFFIXES
    from convscope.data.video import is_video

    found: list[tuple[str, str]] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise UserInputError(f"folder {path} has no image files.")
            found += [("image", str(p)) for p in files]
        elif is_video(path):
            if not path.is_file():
                raise UserInputError(f"video file {path} does not exist.")
            found.append(("video", spec))
        else:
            found.append(("image", spec))
    return found


def _targets(found: list[tuple[str, str]], out_path: Path) -> list[Path]:
    """Where each input's result goes: the file OUT for one input, else OUT/<name>.png
    (videos: <name>.mp4) in the folder OUT, which must exist."""
    from convscope.data.video import is_video

    if len(found) == 1:
        kind, _ = found[0]
        if out_path.is_dir():
            raise UserInputError(
                f"{out_path} is a folder; for one input, --out names the file to write."
            )
        if kind == "video" and not is_video(out_path):
            raise UserInputError(f"a video is written as a video file (.mp4), not {out_path}.")
        if kind == "image" and out_path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
            raise UserInputError(f"an image is written as .png, .jpg or .webp, not {out_path}.")
        return [out_path]
    if not out_path.is_dir():
        raise UserInputError(
            f"with {len(found)} inputs, --out must be an existing folder; {out_path} is not one."
        )
    names = [Path(spec).stem + (".mp4" if kind == "video" else ".png") for kind, spec in found]
    if len(set(names)) < len(names):
        raise UserInputError("two inputs have the same name; their outputs would collide.")
    return [out_path / n for n in names]


@stylenet_app.command("apply")
def apply_cmd(
    net_spec: NetArg,
    inputs: Annotated[
        list[str],
        typer.Argument(help="Images (files or sample names), folders of images, or video files."),
    ],
    out_path: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="The file to write for one input (an image or a video), else an existing "
            "folder to write each result into (as NAME.png, videos as NAME.mp4).",
        ),
    ],
    style: StyleOpt = None,
    blend: BlendOpt = None,
    size: Annotated[
        int | None,
        typer.Option("--size", "-s", help="Resize each input's long side to this first."),
    ] = None,
    preserve_color: Annotated[
        bool,
        typer.Option("--preserve-color", help="Keep each input's colours (stylize luminance)."),
    ] = False,
    grid: Annotated[
        str | None,
        typer.Option(
            "--grid",
            help="Write a blend grid of one image instead: A,B goes from style A to B in 5 "
            "steps; A,B,C,D makes a 5x5 square with the four styles at its corners.",
        ),
    ] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Images per forward pass.")] = 4,
    precision: Annotated[
        Precision,
        typer.Option(
            "--precision",
            help="auto: bfloat16 where the CPU or GPU does it natively (about 2x faster, "
            "pixels within about 0.02 of float32's), else fp32; fp32 is exact.",
        ),
    ] = Precision(library_default("convscope.stylenet.apply:stylize", "precision")),
    device: DeviceOpt = "auto",
    max_pixels: MaxPixelsOpt = MAX_PIXELS_DEFAULT,
    quiet: QuietOpt = False,
) -> None:
    """Stylize images, folders and videos in one pass of a style network. Videos are read
    and written frame by frame (PyAV), keeping the frame rate and the audio."""
    from convscope.data.images import save_image
    from convscope.data.samples import load_image_or_sample
    from convscope.device import resolve_device
    from convscope.events import Progress
    from convscope.stylenet.apply import stylize
    from convscope.stylenet.net import MIN_SIDE
    from convscope.stylenet.zoo import open_net

    if size is not None and size < MIN_SIDE:
        raise UserInputError(f"--size must be at least {MIN_SIDE} pixels, got {size}.")
    found = _inputs(inputs)
    if grid is not None:
        if len(found) != 1 or found[0][0] != "image":
            raise UserInputError("--grid takes one image and writes one image file (--out).")
        if style is not None or blend is not None:
            raise UserInputError("--grid chooses the styles itself; leave out --style and --blend.")
    targets = _targets(found, out_path)
    check_outputs(*targets)
    net, info = open_net(net_spec, device=resolve_device(device))
    if grid is not None:
        _write_grid(
            net,
            info,
            found[0][1],
            targets[0],
            grid,
            size,
            preserve_color,
            precision.value,
            max_pixels,
        )
        return
    choice = _choice(info, style, blend)
    images = [
        (spec, target)
        for (kind, spec), target in zip(found, targets, strict=True)
        if kind == "image"
    ]
    videos = [
        (spec, target)
        for (kind, spec), target in zip(found, targets, strict=True)
        if kind == "video"
    ]
    with progress_bar(quiet) as bar:
        for start in range(0, len(images), batch):
            chunk = images[start : start + batch]
            pictures = [load_image_or_sample(spec, max_pixels=max_pixels)[0] for spec, _ in chunk]
            results = stylize(
                net, pictures, style=choice, size=size, preserve_color=preserve_color,
                batch=batch, precision=precision.value,
            )  # fmt: skip
            for (_, target), result in zip(chunk, results, strict=True):
                save_image(result, target)
            bar(Progress("stylize", start + len(chunk), len(images), "images"))
        for spec, target in videos:
            _write_video(
                net, Path(spec), target, choice, size, preserve_color, batch, precision.value,
                bar,
            )  # fmt: skip
    if len(targets) == 1:
        out.print(f"Wrote {targets[0]}.")
    else:
        out.print(f"Wrote {len(targets)} files into {out_path}.")


def _write_grid(
    net: TransformerNet, info: Any, spec: str, target: Path, grid: str, size: int | None,
    preserve_color: bool, precision: str, max_pixels: int,
) -> None:  # fmt: skip
    import torch
    from torchvision.utils import make_grid

    from convscope.data.images import save_image
    from convscope.data.samples import load_image_or_sample
    from convscope.stylenet.apply import stylize

    weights, columns = _grid_weights(info, grid)
    image = load_image_or_sample(spec, max_pixels=max_pixels)[0]
    tiles = []
    for row in weights:
        tiles += stylize(net, [image], style=row.tolist(), size=size,
                         preserve_color=preserve_color, precision=precision)  # fmt: skip
    picture = make_grid(torch.stack(tiles), nrow=columns, padding=4, pad_value=1.0)
    save_image(picture, target)
    out.print(f"Wrote {target} ({len(tiles)} blends).")


def _write_video(
    net: TransformerNet, src: Path, target: Path, choice: int | list[float] | None,
    size: int | None, preserve_color: bool, batch: int, precision: str, bar: Any,
) -> None:  # fmt: skip
    from convscope.data.video import transcode_video
    from convscope.stylenet.apply import stylize
    from convscope.stylenet.net import MIN_SIDE

    def transform(frames: Tensor) -> Tensor:  # (b, 3, H, W) → (b, 3, H', W')
        import torch

        out_frames = stylize(net, frames, style=choice, size=size,
                             preserve_color=preserve_color, batch=batch,
                             precision=precision)  # fmt: skip
        return torch.stack(out_frames)

    transcode_video(src, target, transform, batch=batch, on_progress=bar, min_side=MIN_SIDE)


# ---- export ------------------------------------------------------------------------------------
@stylenet_app.command("export")
def export_cmd(
    net_spec: NetArg,
    onnx_path: Annotated[
        Path, typer.Option("--onnx", help="The ONNX file to write (dynamic height and width).")
    ],
    style: StyleOpt = None,
    blend: BlendOpt = None,
) -> None:
    """Export a style network to ONNX, one style or a blend baked in, with dynamic batch,
    height and width; the file is checked against PyTorch with onnxruntime at two sizes."""
    from convscope.stylenet.export import check_onnx, export_onnx
    from convscope.stylenet.zoo import open_net

    if onnx_path.suffix.lower() != ".onnx":
        raise UserInputError(
            f"the export is written as .onnx, not {onnx_path.suffix or 'nothing'}."
        )
    check_outputs(onnx_path)
    net, info = open_net(net_spec)
    choice = _choice(info, style, blend)
    export_onnx(net, onnx_path, style=choice)
    try:
        worst = check_onnx(onnx_path, net, style=choice)
    except Exception:
        onnx_path.unlink(missing_ok=True)
        raise
    out.print(f"Wrote {onnx_path} (onnxruntime within {worst:.1e} of PyTorch at two sizes).")
