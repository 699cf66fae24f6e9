"""`convscope features`, `neighbors` and `embed`: a dataset's feature space, its nearest
neighbours and 2-D maps."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from convscope.cli.application import app
from convscope.cli.common import (
    check_checkpoint_seconds,
    check_outputs,
    library_default,
    open_model,
    out,
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
    QuietOpt,
    ResumeOpt,
    WeightsOpt,
)
from convscope.errors import Interrupted, UserInputError

if TYPE_CHECKING:
    from torch import Tensor

    from convscope.events import ProgressCallback
    from convscope.inspect.features import FeatureFile
    from convscope.models import ConvModel

__all__ = [
    "embed_cmd",
    "features_cmd",
    "neighbors_cmd",
]

_EXTRACT = "convscope.inspect.features:extract_features"
_NEAREST = "convscope.inspect.neighbors:nearest"
_EMBED = "convscope.inspect.embed:embed_2d"
_EMBEDDING_IMAGE = "convscope.render.embedding:embedding_image"


class PoolChoice(StrEnum):
    avg = "avg"
    max = "max"
    flatten = "flatten"


class PrecisionChoice(StrEnum):
    fp32 = "fp32"
    bf16 = "bf16"


class MetricChoice(StrEnum):
    l2 = "l2"
    cosine = "cosine"


class MethodChoice(StrEnum):
    pca = "pca"
    tsne = "tsne"
    umap = "umap"


def _default_layer(cm: ConvModel) -> str:
    if "embed" in cm.aliases:
        return "embed"
    if cm.default_layer is not None:
        return cm.default_layer
    raise UserInputError(f"model {cm.name} has no default layer; give one with --layer.")


def _check_output(path: Path, suffixes: Sequence[str], what: str) -> None:
    if path.suffix.lower() not in suffixes:
        raise UserInputError(f"{what} {path} must end in {' or '.join(suffixes)}.")
    check_outputs(path)


# ---- features --------------------------------------------------------------------------------


@app.command("features")
def features_cmd(
    dataset: DatasetArg,
    out_path: Annotated[Path, typer.Option("--out", "-o", help="The .safetensors file to write.")],
    model: ModelOpt = "efficientnet_lite0",
    layer: Annotated[
        str | None,
        typer.Option(
            "--layer", "-l", help="Layer name or alias. Default: `embed`, else the model's own."
        ),
    ] = None,
    pool: Annotated[
        PoolChoice, typer.Option("--pool", help="Pool each map over space: avg, max, or flatten.")
    ] = PoolChoice(library_default(_EXTRACT, "pool")),
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", min=1, help="Images per forward pass. Default: by size."),
    ] = None,
    precision: Annotated[
        PrecisionChoice,
        typer.Option("--precision", help="fp32, or bf16 autocast (faster on CPUs with bf16)."),
    ] = PrecisionChoice(library_default(_EXTRACT, "precision")),
    resume: ResumeOpt = False,
    checkpoint_seconds: CheckpointSecondsOpt = library_default(_EXTRACT, "checkpoint_seconds"),
    limit: LimitOpt = None,
    split: Annotated[
        str | None, typer.Option("--split", help="fashion-mnist: train or test.")
    ] = None,
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    max_pixels: MaxPixelsOpt = MAX_PIXELS_DEFAULT,
    quiet: QuietOpt = False,
) -> None:
    """Extract pooled features of one layer for a whole dataset, into a safetensors file.

    Features stream to disk as they are computed (memory stays flat), unreadable images are
    skipped and counted, and Ctrl-C (even kill -9) keeps the finished batches for --resume.
    Under `torchrun`, each rank computes its share of the batches and rank 0 writes the one
    file, the same as a single process writes."""
    check_checkpoint_seconds(checkpoint_seconds)
    _check_output(out_path, (".safetensors",), "The output file")
    rank = 0
    try:
        from convscope.data.datasets import load_dataset
        from convscope.inspect.features import extract_features, partial_path
        from convscope.inspect.scan import distributed_context

        rank, world = distributed_context()
        ds = load_dataset(dataset, split=split, max_pixels=max_pixels)
        cm = open_model(model, weights, device, seed=0)
        name = layer or _default_layer(cm)
        cm.resolve(name)
        try:
            with progress_bar(quiet or rank != 0) as bar:
                ff = extract_features(
                    cm,
                    ds,
                    name,
                    out=out_path,
                    pool=pool.value,  # type: ignore[arg-type]
                    batch_size=batch_size,
                    precision=precision.value,  # type: ignore[arg-type]
                    limit=limit,
                    resume=resume,
                    checkpoint_seconds=checkpoint_seconds,
                    rank=rank,
                    world=world,
                    on_progress=resume_notice(bar, show=not quiet and rank == 0, share=world > 1),
                )
        except KeyboardInterrupt:
            folder = partial_path(out_path, rank=rank, world=world)
            if not (folder / "state.json").is_file():
                raise Interrupted("nothing was saved yet.") from None
            raise Interrupted(
                f"{_saved_rows(folder)} images are saved in {folder}; run the same command "
                "with --resume to continue."
            ) from None
    except UserInputError:
        if rank == 0:
            raise
        raise typer.Exit(2) from None  # every rank meets the same error; rank 0 says it
    if rank == 0:
        out.print(
            f"Wrote {out_path}: {len(ff)} images × {ff.dim} features of {cm.name} {name} "
            f"({ff.skipped} skipped)."
        )


def _saved_rows(folder: Path) -> int:
    try:
        return int(json.loads((folder / "state.json").read_text())["rows"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


# ---- neighbors -------------------------------------------------------------------------------


def _model_of(ff: FeatureFile, device: str) -> ConvModel:
    from convscope.errors import WeightsUnavailableError

    weights = ff.provenance.get("weights_arg", "") or None
    try:
        return open_model(ff.model, weights, device, seed=0)
    except WeightsUnavailableError as exc:
        raise UserInputError(
            f"Cannot compute features like {ff.path}: {str(exc).rstrip('.')}."
        ) from None


def _parse_query(spec: str, n: int) -> int | None:
    """The row of an `@N` query, or None for an image or sample."""
    if not spec.startswith("@"):
        return None
    body = spec[1:]
    if not body.isdigit():
        raise UserInputError(f"Query {spec!r} is not @N with N a number of an indexed image.")
    row = int(body)
    if row >= n:
        raise UserInputError(f"Query {spec} is out of range: the index has images @0..@{n - 1}.")
    return row


def _pixel_rows(
    ff: FeatureFile, rows: Sequence[int], size: int, bar: ProgressCallback
) -> Iterator[Tensor]:
    from convscope.inspect.features import source_dataset
    from convscope.inspect.neighbors import pixel_vectors

    ds = source_dataset(ff)
    step = 4096
    for lo in range(0, len(rows), step):
        ids = [int(ff.indices[r]) for r in rows[lo : lo + step]]
        yield pixel_vectors(ds, ids, size, on_progress=bar)


@app.command("neighbors")
def neighbors_cmd(
    queries: Annotated[
        list[str],
        typer.Argument(help="Image files, sample names, or @N for the N-th image of the index."),
    ],
    index: Annotated[
        Path, typer.Option("--index", "-i", help="A feature file from `convscope features`.")
    ],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="The PNG figure to write.")],
    k: Annotated[int, typer.Option("--k", "-k", min=1, help="Neighbours per query.")] = 8,
    metric: Annotated[
        MetricChoice, typer.Option("--metric", help="l2 (Euclidean) or cosine distance.")
    ] = MetricChoice(library_default(_NEAREST, "metric")),
    pixels: Annotated[
        bool,
        typer.Option("--pixels", help="Add a row of raw-pixel neighbours under each query."),
    ] = False,
    device: DeviceOpt = "auto",
    max_pixels: MaxPixelsOpt = MAX_PIXELS_DEFAULT,
    quiet: QuietOpt = False,
) -> None:
    """Show the nearest images of the index in feature space (and in pixel space) for each
    query. Features of new images are computed with the index's model, layer and pooling."""
    import torch

    from convscope.data.images import save_png
    from convscope.data.samples import load_image_or_sample
    from convscope.inspect.features import feature_images, image_features, load_features
    from convscope.inspect.neighbors import drop_self, nearest, nearest_chunks, pixels_of
    from convscope.render.grids import image_grid, titled

    _check_output(out_path, (".png",), "The figure")
    ff = load_features(index)
    n = len(ff)
    if k > n:
        raise UserInputError(f"--k {k} is larger than the index, which has {n} images.")
    rows = [_parse_query(q, n) for q in queries]
    if any(r is not None for r in rows) and k + 1 > n:
        raise UserInputError(
            f"--k {k} leaves no room to drop an @N query itself from an index of {n} images; "
            f"use --k {n - 1} or less."
        )
    loaded: dict[int, tuple[Tensor, str]] = {}
    for j, (spec, row) in enumerate(zip(queries, rows, strict=True)):
        if row is None:
            loaded[j] = load_image_or_sample(spec, max_pixels=max_pixels)
    vectors = torch.empty(len(queries), ff.dim)
    if loaded:
        cm = _model_of(ff, device)
        for j, (image, _) in loaded.items():
            vectors[j] = image_features(cm, image, ff.layer, pool=ff.pool, precision=ff.precision)[
                0
            ]
    for j, row in enumerate(rows):
        if row is not None:
            vectors[j] = ff.features[row]
    asked = [r for r in rows if r is not None]
    by_row = dict(zip(asked, feature_images(ff, asked), strict=True)) if asked else {}
    images = [loaded[j][0] if row is None else by_row[row] for j, row in enumerate(rows)]
    m = metric.value
    dist, ids = nearest(vectors, ff.features, min(n, k + 1), metric=m)  # type: ignore[arg-type]
    feat_hits = [drop_self(dist[j], ids[j], rows[j], k) for j in range(len(queries))]
    pix_hits: list[tuple[list[float], list[int]]] = []
    if pixels:
        size = 32
        qpix = pixels_of(images, size)  # (Q, 3·32·32)
        with progress_bar(quiet) as bar:
            pd, pi = nearest_chunks(
                qpix,
                _pixel_rows(ff, list(range(n)), size, bar),
                min(n, k + 1),
                metric=m,  # type: ignore[arg-type]
            )
        pix_hits = [drop_self(pd[j], pi[j], rows[j], k) for j in range(len(queries))]
    names = ff.label_names()
    hit_rows = sorted({r for _, rs in feat_hits + pix_hits for r in rs})
    hit_images = dict(zip(hit_rows, feature_images(ff, hit_rows), strict=True))
    tiles: list[Tensor] = []
    labels: list[str] = []
    for j, spec in enumerate(queries):
        lines = [("features", feat_hits[j])] + ([("pixels", pix_hits[j])] if pixels else [])
        for kind, (ds_, is_) in lines:
            row = rows[j]
            head = spec if row is None or not names[row] else f"{spec} ({names[row]})"
            tiles.append(images[j])
            labels.append(f"{kind} · {head}" if pixels else head)
            for d, r in zip(ds_, is_, strict=True):
                tiles.append(hit_images[r])
                labels.append(f"{d:.3g} · {names[r]}" if names[r] else f"{d:.3g}")
    grid = image_grid(tiles, ncol=k + 1, labels=labels, tile=112)
    title = f"{ff.model} · {ff.layer} · {m}"
    save_png(titled(grid, title), out_path)
    if not quiet:
        out.print(f"Wrote {out_path} ({len(queries)} queries × {k} neighbours).")


# ---- embed -----------------------------------------------------------------------------------


def _thumbnails(ff: FeatureFile, rows: Sequence[int], side: int, bar: ProgressCallback) -> Tensor:
    """(len(rows), 3, side, side) uint8 thumbnails (short side resized, center-cropped),
    decoded in the background from the index's dataset."""
    import torch

    from convscope.data.batches import iter_batches
    from convscope.events import Progress
    from convscope.inspect.features import feature_images, source_dataset
    from convscope.models import Preprocess

    smooth = Preprocess(resize=side, crop=side, interpolation="bilinear")
    crisp = Preprocess(resize=side, crop=side, interpolation="nearest")

    def geometry(image: Tensor) -> Tensor:  # small images grow with crisp pixels
        return (crisp if min(image.shape[-2:]) < side else smooth).geometry(image)

    thumbs = torch.zeros(len(rows), 3, side, side, dtype=torch.uint8)
    try:
        ds = source_dataset(ff)
    except UserInputError:  # e.g. files were added to the folder: read the files by name
        for j, im in enumerate(feature_images(ff, rows)):
            thumbs[j] = (geometry(im) * 255).round().to(torch.uint8)[0]
        return thumbs
    ids = [int(ff.indices[r]) for r in rows]
    at = 0
    for batch in iter_batches(ds, geometry, 256, indices=ids):
        if batch.skipped:
            s = batch.skipped[0]
            raise UserInputError(f"Cannot read {s.ident} for its thumbnail: {s.reason}")
        b = len(batch.indices)
        thumbs[at : at + b] = (batch.images * 255).round().to(torch.uint8)
        at += b
        bar(Progress("thumbnails", at, len(rows), "images"))
    return thumbs


@app.command("embed")
def embed_cmd(
    features: Annotated[Path, typer.Argument(help="A feature file from `convscope features`.")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="The PNG map to write.")],
    method: Annotated[
        MethodChoice, typer.Option("--method", help="pca, tsne (openTSNE) or umap (umap-learn).")
    ] = MethodChoice(library_default(_EMBED, "method")),
    html_out: Annotated[
        Path | None,
        typer.Option("--html", help="Also write an interactive, self-contained HTML map."),
    ] = None,
    grid: Annotated[
        bool, typer.Option("--grid", help="Snap the images to a grid, one per cell.")
    ] = False,
    perplexity: Annotated[
        float, typer.Option("--perplexity", min=0.1, help="t-SNE perplexity.")
    ] = library_default(_EMBED, "perplexity"),
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = library_default(
        _EMBED, "seed"
    ),
    max_points: Annotated[
        int | None,
        typer.Option("--max-points", min=2, help="Map a random subset of this many images."),
    ] = None,
    size: Annotated[
        int, typer.Option("--size", min=64, help="Width of the PNG map in pixels.")
    ] = library_default(_EMBEDDING_IMAGE, "size"),
    quiet: QuietOpt = False,
) -> None:
    """Map a feature file to 2-D (PCA, t-SNE or UMAP) and draw every image at its place."""
    _check_output(out_path, (".png",), "The map")
    if html_out is not None:
        _check_output(html_out, (".html", ".htm"), "The HTML map")
    check_outputs(out_path, html_out)
    import numpy as np

    from convscope.data.files import atomic_paths
    from convscope.data.images import save_png
    from convscope.inspect.embed import embed_2d, grid_snap, knn_accuracy_2d
    from convscope.inspect.features import load_features
    from convscope.render.embedding import embedding_html, embedding_image, thumbnail_size
    from convscope.render.grids import titled

    ff = load_features(features)
    n = len(ff)
    rows = list(range(n))
    if max_points is not None and max_points < n:
        rng = np.random.default_rng(seed)
        rows = sorted(int(r) for r in rng.choice(n, size=max_points, replace=False))
    with progress_bar(quiet) as bar:
        xy = embed_2d(
            ff.features[rows],
            method=method.value,  # type: ignore[arg-type]
            perplexity=perplexity,
            seed=seed,
            on_progress=bar,
        )
        side = thumbnail_size(len(rows), size, grid=grid)
        html_side = min(64, max(8, int((16_000_000 / len(rows)) ** 0.5)))
        thumbs = _thumbnails(ff, rows, max(side, html_side if html_out else 0, 8), bar)
    labels = ff.labels[rows]
    classes = ff.classes
    pos = grid_snap(xy) if grid else xy
    picture = embedding_image(pos, thumbs, size=size, grid=grid, labels=labels, classes=classes)
    title = f"{ff.model} · {ff.layer} · {method.value} · {len(rows)} images"
    page = None
    if html_out is not None:
        idents = ff.idents
        page = embedding_html(
            xy,
            thumbs,
            labels,
            title=title,
            idents=[idents[r] for r in rows],
            classes=classes,
            subtitle=ff.provenance.get("dataset", ""),
        )
    with atomic_paths([p for p in (out_path, html_out) if p is not None]) as tmps:
        save_png(titled(picture, title), tmps[0])
        if page is not None:
            tmps[1].write_text(page, encoding="utf-8")
    note = ""
    if (labels >= 0).sum() > 10:
        note = f"; 10-NN accuracy in the map {knn_accuracy_2d(xy, labels, k=10):.3f}"
    written = f"{out_path}" + (f" and {html_out}" if html_out else "")
    out.print(f"Wrote {written} ({len(rows)} images, {method.value}{note}).")
