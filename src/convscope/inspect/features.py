"""Pooled layer features of a whole dataset, streamed to a safetensors file.

    ff = extract_features(model, "digits", "embed", out=Path("digits.safetensors"))
    ff.features            # (N, D) float32, memory-mapped from the file
    ff.indices, ff.labels  # (N,) int64 dataset indices and labels (-1 = none)
    ff.provenance          # model, weights, layer, pooling, precision, dataset, idents, ...

Extraction never holds all features in memory: finished batches go to chunk files in a
`<out>.partial/` folder (with a small JSON state), committed every ~16 MB of features and at
least every `checkpoint_seconds`, and the final file is streamed from them and written
atomically. An interrupted run (Ctrl-C, or even kill -9) leaves a valid partial state;
`resume=True` continues it, and the result is bit-identical to an uninterrupted run.

Under torchrun (`rank`/`world`), each rank computes its share of whole batches into its own
`<out>.partial.rankK/` folder and rank 0 merges them into the same file, byte for byte, that
a single process writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from convscope.data.batches import iter_batches
from convscope.data.datasets import ImageDataset, Skipped, load_dataset
from convscope.data.images import load_image
from convscope.data.stream import (
    NUMPY_DTYPES,
    ChunkLog,
    StreamedTensor,
    read_safetensors_header,
    write_safetensors,
)
from convscope.errors import UserInputError
from convscope.events import Progress, ProgressCallback, no_progress
from convscope.inspect.scan import agree, all_gather_objects, broadcast_object
from convscope.models.base import ConvModel, WeightSource
from convscope.probe import capture

__all__ = [
    "FORMAT",
    "FeatureFile",
    "Pooling",
    "Precision",
    "auto_batch_size",
    "extract_features",
    "feature_images",
    "image_features",
    "load_features",
    "partial_path",
    "pool_features",
    "source_dataset",
    "weights_argument",
]

FORMAT = "convscope-features/1"
"""The `format` metadata value of every feature file convscope writes."""

Pooling = Literal["avg", "max", "flatten"]
Precision = Literal["fp32", "bf16"]
POOLINGS: tuple[str, ...] = ("avg", "max", "flatten")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")

_CHUNK_FLOATS = 4_000_000  # about 16 MB of float32 features per chunk file

# ---- the feature file ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureFile:
    """Features of a dataset at one layer, with where they came from.

    `provenance` holds strings: format, convscope_version, model, weights (the source),
    weights_arg (what reloads them: "" for the default), layer, layer_dotted, pool, precision,
    dataset, dataset_split, dataset_size, classes (JSON or "null"), idents (JSON list, one per
    row), skipped (a count), skipped_idents (JSON list), count, dim.
    """

    features: Tensor  # (N, D) float32
    indices: Tensor  # (N,) int64 dataset indices
    labels: Tensor  # (N,) int64, -1 = no label
    provenance: dict[str, str] = field(default_factory=dict)
    path: Path | None = None

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def idents(self) -> list[str]:
        """The identity (a path or "digits/17") of each row's image."""
        return [str(s) for s in json.loads(self.provenance.get("idents", "[]"))]

    @property
    def skipped(self) -> int:
        """How many dataset images could not be read and were left out."""
        return int(self.provenance.get("skipped", "0"))

    @property
    def classes(self) -> list[str] | None:
        raw = json.loads(self.provenance.get("classes", "null"))
        return None if raw is None else [str(c) for c in raw]

    @property
    def model(self) -> str:
        return self.provenance.get("model", "")

    @property
    def layer(self) -> str:
        return self.provenance.get("layer", "")

    @property
    def pool(self) -> Pooling:
        p = self.provenance.get("pool", "avg")
        return p if p in POOLINGS else "avg"  # type: ignore[return-value]

    @property
    def precision(self) -> Precision:
        p = self.provenance.get("precision", "fp32")
        return p if p in PRECISIONS else "fp32"  # type: ignore[return-value]

    def label_names(self) -> list[str]:
        """One label text per row ("" where there is none)."""
        classes = self.classes
        out = []
        for lab in self.labels.tolist():
            if lab < 0:
                out.append("")
            elif classes is not None and lab < len(classes):
                out.append(classes[lab])
            else:
                out.append(str(lab))
        return out


_REQUIRED = {"features": ("F32", 2), "indices": ("I64", 1), "labels": ("I64", 1)}


def load_features(path: str | Path, *, mmap: bool = True) -> FeatureFile:
    """Open a feature file written by `extract_features`.

    With `mmap` (the default) the features are memory-mapped copy-on-write, so opening a large
    file costs no memory until rows are read. Missing, damaged and non-convscope files raise a
    one-sentence `UserInputError`.
    """
    p = Path(path).expanduser()
    header, start = read_safetensors_header(p, "feature file")
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserInputError(
            f"{p} is a safetensors file but not a convscope feature file "
            "(make one with `convscope features`)."
        )
    size = p.stat().st_size
    damaged = f"{p} is a damaged convscope feature file"
    arrays: dict[str, NDArray[Any]] = {}
    for name, (dtype, ndim) in _REQUIRED.items():
        info = header.get(name)
        if not isinstance(info, dict):
            raise UserInputError(f"{damaged} (it has no {name!r} tensor).")
        shape: Any = info.get("shape")
        offsets: Any = info.get("data_offsets")
        ok = (
            info.get("dtype") == dtype
            and isinstance(shape, list)
            and len(shape) == ndim
            and all(isinstance(s, int) and s >= 0 for s in shape)
            and isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) for o in offsets)
        )
        if not ok:
            raise UserInputError(f"{damaged} (tensor {name!r} has a bad dtype or shape).")
        np_dtype = NUMPY_DTYPES[dtype].newbyteorder("<")
        begin, end = offsets
        nbytes = int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize
        if end - begin != nbytes or begin < 0 or start + end > size:
            raise UserInputError(f"{damaged} (tensor {name!r} is truncated).")
        if nbytes == 0:
            arr: NDArray[Any] = np.zeros(shape, dtype=np_dtype)
        elif mmap and name == "features":
            arr = np.memmap(
                str(p), dtype=np_dtype, mode="c", offset=start + begin, shape=tuple(shape)
            )
        else:
            with open(p, "rb") as f:
                f.seek(start + begin)
                arr = np.frombuffer(bytearray(f.read(nbytes)), dtype=np_dtype).reshape(shape)
        arrays[name] = arr
    n = arrays["features"].shape[0]
    if arrays["indices"].shape[0] != n or arrays["labels"].shape[0] != n:
        raise UserInputError(f"{damaged} (features, indices and labels differ in length).")
    provenance = {str(k): str(v) for k, v in meta.items()}
    try:
        idents = json.loads(provenance.get("idents", "[]"))
    except json.JSONDecodeError:
        raise UserInputError(f"{damaged} (its image list is not JSON).") from None
    if not isinstance(idents, list) or len(idents) != n:
        raise UserInputError(f"{damaged} (its image list does not match its {n} rows).")
    return FeatureFile(
        features=torch.from_numpy(arrays["features"]),
        indices=torch.from_numpy(np.asarray(arrays["indices"], dtype=np.int64)),
        labels=torch.from_numpy(np.asarray(arrays["labels"], dtype=np.int64)),
        provenance=provenance,
        path=p,
    )


# ---- computing features --------------------------------------------------------------------------


def pool_features(act: Tensor, pool: Pooling) -> Tensor:
    """(B, C, H, W) (or (B, C, ...), or (B, D)) activations → (B, D) float32."""
    if pool not in POOLINGS:
        raise UserInputError(f"pool must be one of {', '.join(POOLINGS)}, not {pool!r}.")
    x = act.float()
    if x.dim() < 2:
        raise UserInputError(f"layer output has shape {tuple(act.shape)}; need (B, ...).")
    if x.dim() == 2:
        return x  # (B, D): already a vector per image
    if pool == "flatten":
        return x.reshape(x.shape[0], -1)  # (B, C·H·W)
    flat = x.flatten(2)  # (B, C, H·W)
    return flat.mean(dim=2) if pool == "avg" else flat.amax(dim=2)  # (B, C)


def _forward_features(
    model: ConvModel,
    x: Tensor,
    layer: str,
    *,
    pool: Pooling,
    precision: Precision,
    channels_last: bool,
) -> Tensor:
    """Normalized (B, 3, h, w) input → (B, D) float32 pooled features on the CPU."""
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(
        device_type=x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"
    ):
        act = capture(model, x, [layer])[layer]  # (B, C, H, W) or (B, D)
    return pool_features(act, pool).cpu()


def image_features(
    model: ConvModel,
    images: Tensor | Sequence[Tensor],
    layer: str,
    *,
    pool: Pooling = "avg",
    precision: Precision = "fp32",
    channels_last: bool = False,
) -> Tensor:
    """Pooled features (B, D) of a few images ((3, H, W) floats in [0, 1]) at `layer`,
    computed exactly as `extract_features` computes them."""
    _check_options(pool, precision)
    if isinstance(images, Tensor) and images.dim() == 3:
        images = [images]
    items = list(images)
    if not items:
        raise UserInputError("no images were given.")
    geo = [model.preprocess.geometry(im if im.dim() == 4 else im.unsqueeze(0)) for im in items]
    x = model.preprocess.normalize(_stack(geo)).to(model.device)  # (B, 3, h, w)
    return _forward_features(
        model, x, layer, pool=pool, precision=precision, channels_last=channels_last
    )


def _stack(images: Sequence[Tensor]) -> Tensor:
    shapes = sorted({tuple(t.shape[-2:]) for t in images})
    if len(shapes) > 1:
        raise UserInputError(
            f"images of different sizes {shapes} cannot be batched; the model's preprocessing "
            "has no crop, so give images of one size."
        )
    return torch.cat([t if t.dim() == 4 else t.unsqueeze(0) for t in images])


def _check_options(pool: str, precision: str) -> None:
    if pool not in POOLINGS:
        raise UserInputError(f"pool must be one of {', '.join(POOLINGS)}, not {pool!r}.")
    if precision not in PRECISIONS:
        raise UserInputError(
            f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}."
        )


def auto_batch_size(side: int) -> int:
    """A batch size for `side`×`side` inputs on a CPU: about 4 at 224 px (measured fastest
    there), more for small images, within 1..256."""
    return max(1, min(256, round(4 * (224 / max(1, side)) ** 2)))


def weights_argument(source: WeightSource) -> str:
    """The `weights=` value that loads these weights again ("" for the model's default)."""
    if source.kind == "random":
        return "random"
    if source.kind == "file":
        return source.detail
    if source.kind == "url":
        return "DEFAULT"
    return ""


def _dataset_spec(dataset: ImageDataset, given: str | Path | None) -> tuple[str, str]:
    """(spec, split) with which `load_dataset` opens `dataset` again."""
    split = str(getattr(dataset, "split", "") or "")
    root = getattr(dataset, "root", None)
    if type(dataset).__name__ == "ImageFolder" and isinstance(root, Path):
        return str(root.resolve()), ""
    if type(dataset).__name__ == "FashionMNIST":
        return "fashion-mnist", split
    if given is not None and not Path(given).exists():
        return str(given), split
    return dataset.name, split


def _label_lookup(dataset: ImageDataset) -> Callable[[int], int]:
    """A cheap label-of-index function (decoding the image only where nothing cheaper exists)."""
    labels = getattr(dataset, "labels", None)
    if isinstance(labels, np.ndarray):
        return lambda i: int(labels[i])
    label = getattr(dataset, "label", None)
    if callable(label):
        return lambda i: -1 if (v := label(i)) is None else int(v)
    return lambda i: -1 if (v := dataset[i].label) is None else int(v)


def partial_path(out: str | Path, *, rank: int = 0, world: int = 1) -> Path:
    """The folder where an unfinished extraction into `out` keeps its chunks and state; under
    torchrun (`world` > 1) each rank has its own, `<out>.partial.rankK`."""
    p = Path(out)
    return p.with_name(p.name + ".partial" + (f".rank{rank}" if world > 1 else ""))


@dataclass
class _Pending:
    """One finished batch, not yet in a chunk file."""

    position: int  # positions consumed (good or skipped) after this batch
    indices: list[int]
    labels: list[int]
    features: NDArray[np.float32]  # (B, D)
    skipped: list[Skipped]


class _FeatureRun:
    """The `<out>.partial/` folder of an extraction: a `ChunkLog` of (features, indices,
    labels) chunks whose state also records the feature width and the skipped images."""

    def __init__(self, log: ChunkLog) -> None:
        self.log = log

    @classmethod
    def open(cls, folder: Path, config: dict[str, Any], *, resume: bool, out: Path) -> _FeatureRun:
        log = ChunkLog.open(folder, config, resume=resume, out=out)
        log.extra.setdefault("dim", None)
        log.extra.setdefault("skipped", [])
        return cls(log)

    @property
    def config(self) -> dict[str, Any]:
        return self.log.config

    @property
    def position(self) -> int:
        return self.log.position

    @property
    def rows(self) -> int:
        return self.log.rows

    @property
    def dim(self) -> int | None:
        d = self.log.extra.get("dim")
        return None if d is None else int(d)

    @property
    def skipped(self) -> list[list[Any]]:
        return list(self.log.extra.get("skipped", []))

    def flush(self, pending: Sequence[_Pending]) -> None:
        """Commit the batches of `pending` not yet saved (idempotent: a batch whose position is
        already in the state is left out), as one chunk."""
        new = [b for b in pending if b.position > self.position]
        if not new:
            return
        rows = [b for b in new if b.indices]
        arrays: dict[str, NDArray[Any]] | None = None
        dim = self.dim
        if rows:
            feats = np.concatenate([b.features for b in rows])  # (R, D)
            arrays = {
                "features": np.ascontiguousarray(feats, dtype=np.float32),
                "indices": np.asarray([i for b in rows for i in b.indices], np.int64),
                "labels": np.asarray([v for b in rows for v in b.labels], np.int64),
            }
            dim = int(feats.shape[1])
        skipped = self.skipped + [[s.index, s.ident, s.reason] for b in new for s in b.skipped]
        self.log.commit(arrays, position=new[-1].position, extra={"dim": dim, "skipped": skipped})

    def iter_chunks(self, key: str) -> Iterator[NDArray[Any]]:
        return self.log.iter_chunks(key)

    def remove(self) -> None:
        self.log.remove()


def source_dataset(ff: FeatureFile) -> ImageDataset:
    """The dataset a feature file was made from, opened again from its provenance."""
    spec = ff.provenance.get("dataset", "")
    split = ff.provenance.get("dataset_split", "") or None
    if not spec:
        raise UserInputError(f"{ff.path} does not record its dataset.")
    ds = load_dataset(spec, split=split)
    size = ff.provenance.get("dataset_size")
    if size is not None and size.isdigit() and int(size) != len(ds):
        raise UserInputError(
            f"dataset {spec} has {len(ds)} images now but had {size} when {ff.path} was made."
        )
    return ds


def feature_images(
    ff: FeatureFile, rows: Sequence[int], *, dataset: ImageDataset | None = None
) -> list[Tensor]:
    """The images of `rows` of a feature file, each (3, H, W) in [0, 1]: files by their path,
    others by index from `dataset` (default: `source_dataset(ff)`, opened when first needed)."""
    idents = ff.idents
    out: list[Tensor] = []
    for r in rows:
        if not 0 <= r < len(ff):
            raise UserInputError(f"row {r} is out of range: {ff.path} has {len(ff)} images.")
        ident = idents[r]
        if Path(ident).is_file():
            out.append(load_image(ident))
            continue
        if dataset is None:
            dataset = source_dataset(ff)
        out.append(dataset[int(ff.indices[r])].image)
    return out


def _first_side(model: ConvModel, dataset: ImageDataset, order: Sequence[int]) -> int:
    pre = model.preprocess
    if pre.crop is not None:
        return pre.crop
    if pre.resize is not None:
        return pre.resize
    for i in order[:16]:
        try:
            return int(max(dataset[i].image.shape[-2:]))
        except UserInputError:
            continue
    return 224


def _check_seconds(checkpoint_seconds: float) -> None:
    if not (isinstance(checkpoint_seconds, (int, float)) and math.isfinite(checkpoint_seconds)):
        raise UserInputError(
            f"checkpoint_seconds must be a finite number of seconds, got {checkpoint_seconds!r}."
        )
    if checkpoint_seconds <= 0:
        raise UserInputError(f"checkpoint_seconds must be more than 0, got {checkpoint_seconds}.")


def _check_shard(rank: int, world: int) -> None:
    if world < 1 or not 0 <= rank < world:
        raise UserInputError(
            f"rank must be 0..world-1 with world at least 1, got rank {rank} of {world}."
        )
    if world == 1:
        return
    import torch.distributed as dist

    ready = dist.is_available() and dist.is_initialized()
    if not ready or dist.get_world_size() != world or dist.get_rank() != rank:
        raise UserInputError(
            f"rank {rank} of {world} needs torch.distributed initialized with {world} processes "
            "(run under torchrun, where `distributed_context()` joins the group)."
        )


def _shard(order: Sequence[int], batch_size: int, rank: int, world: int) -> list[int]:
    """The images of `rank`: every `world`-th block of `batch_size` consecutive ones, so each
    image is computed in the same batch as in a single-process run."""
    blocks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [i for block in blocks[rank::world] for i in block]


def _check_layout(out: Path, world: int) -> None:
    """Refuse to start over beside an interrupted run of the other kind (one process, or
    torchrun), whose partial folders this run would never continue or remove."""
    if world > 1:
        single = partial_path(out)
        if single.exists():
            raise UserInputError(
                f"{single} holds an interrupted single-process run into {out}; continue it "
                "without torchrun (with --resume), or delete that folder to start over."
            )
        return
    head = f"{out.name}.partial.rank"
    with contextlib.suppress(OSError):
        ranks = sorted(p for p in out.parent.iterdir() if p.name.startswith(head))
        if ranks:
            raise UserInputError(
                f"{ranks[0]} holds an interrupted torchrun run into {out}; continue it with the "
                "same torchrun command and --resume, or delete those folders to start over."
            )


def _remove_stale_temps(target: Path) -> None:
    """Remove temporary files that an atomic write of `target` killed mid-way (kill -9) left
    beside it: `.NAME.XXXX.tmpSUFFIX`, see `convscope.data.files.atomic_path`."""
    head, tail = f".{target.name}.", f".tmp{target.suffix}"
    with contextlib.suppress(OSError):
        for p in target.parent.iterdir():
            if p.name.startswith(head) and p.name.endswith(tail) and p.is_file():
                with contextlib.suppress(OSError):
                    p.unlink()


def extract_features(
    model: ConvModel,
    dataset: ImageDataset | str | Path,
    layer: str,
    *,
    out: Path,
    pool: Pooling = "avg",
    batch_size: int | None = None,
    precision: Precision = "fp32",
    channels_last: bool | None = None,
    limit: int | None = None,
    resume: bool = False,
    checkpoint_seconds: float = 30.0,
    rank: int = 0,
    world: int = 1,
    on_progress: ProgressCallback = no_progress,
) -> FeatureFile:
    """Stream pooled features of `layer` for every image of `dataset` into `out`.

    Args:
        model: the network; `layer` is a dotted name or alias of it.
        dataset: an `ImageDataset`, a built-in dataset name, or a folder of images.
        out: the .safetensors file to write (atomically; replaced if it exists).
        pool: "avg" or "max" over space, or "flatten" (C·H·W values per image).
        batch_size: images per forward; None picks one from the input size (4 at 224 px).
            Batches are fixed blocks of consecutive images (smaller where some are unreadable).
        precision: "fp32", or "bf16" autocast (faster on CPUs with bf16 support; inexact).
        channels_last: feed channels-last input; None = for inputs of 64 px and more.
        limit: only the first `limit` images of the dataset.
        resume: continue an interrupted run into the same `out` (same settings required).
        checkpoint_seconds: commit the finished batches to the partial folder at least this
            often (besides every ~16 MB of features), so a killed run loses at most about
            this much work.
        rank, world: this process's share under torchrun (`distributed_context()` gives
            them): each rank computes every `world`-th block of `batch_size` images, starting
            at block `rank`, into its own `partial_path(out, rank=rank, world=world)` folder
            (resumable on its own), and rank 0 merges the folders into one file, byte for byte
            the single-process one. Needs torch.distributed initialized and a filesystem that
            every rank shares; every rank returns the file.
        on_progress: receives a `Progress` per batch (task "features", unit "images"; under
            torchrun, counting this rank's share).

    Returns the written file, opened with `load_features` (memory-mapped). Unreadable images
    are skipped and counted (`FeatureFile.skipped`); an empty dataset raises.
    """
    _check_options(pool, precision)
    if batch_size is not None and batch_size < 1:
        raise UserInputError(f"batch size must be at least 1, got {batch_size}.")
    if limit is not None and limit < 1:
        raise UserInputError(f"limit must be at least 1, got {limit}.")
    _check_seconds(checkpoint_seconds)
    _check_shard(rank, world)
    given = dataset if isinstance(dataset, (str, Path)) else None
    ds = load_dataset(dataset) if isinstance(dataset, (str, Path)) else dataset
    n_all = len(ds)
    if n_all == 0:
        raise UserInputError(f"Dataset {ds.name} has no images.")
    order = list(range(n_all if limit is None else min(limit, n_all)))
    dotted = model.resolve(layer)
    out = Path(out).expanduser()
    if out.suffix.lower() != ".safetensors":
        raise UserInputError(f"The output file must end in .safetensors, got {out.name}.")
    if not out.parent.is_dir():
        raise UserInputError(f"Cannot write {out}: the folder {out.parent} does not exist.")
    spec, split = _dataset_spec(ds, given)
    config: dict[str, Any] = {
        "model": model.name,
        "weights": str(model.source),
        "layer": layer,
        "layer_dotted": dotted,
        "pool": pool,
        "precision": precision,
        "dataset": spec,
        "dataset_split": split,
        "dataset_size": n_all,
        "count": len(order),
    }
    side = _first_side(model, ds, order)
    bs = batch_size or auto_batch_size(side)
    cl = side >= 64 if channels_last is None else channels_last
    shard = _shard(order, bs, rank, world)
    if world > 1:  # which images a rank's folder holds depends on these, too
        config.update(rank=rank, world=world, batch_size=bs)
    _check_layout(out, world)
    folder = partial_path(out, rank=rank, world=world)
    fresh = not folder.exists()
    try:
        run = _FeatureRun.open(folder, config, resume=resume, out=out)
    except UserInputError as exc:
        agree(world, str(exc))
        raise
    try:
        agree(world, None)
    except UserInputError:  # another rank cannot start: leave no new folder behind
        if fresh:
            run.remove()
        raise

    label_of = _label_lookup(ds)
    shape: list[tuple[int, ...]] = []

    def transform(image: Tensor) -> Tensor:  # (3, H, W) → (3, h, w), on the decoding thread
        x = model.preprocess.geometry(image)
        if not shape:
            shape.append(tuple(x.shape))
        elif tuple(x.shape) != shape[0]:
            raise UserInputError(_size_error(model, shape[0], tuple(x.shape)))
        return x

    start = run.position
    total = len(shard)
    pending: list[_Pending] = []
    pending_rows = 0
    chunk_rows = 4096
    skipped_so_far = len(run.skipped)
    device = model.device
    failed: str | None = None
    on_progress(Progress("features", start, total, "images", _skip_note(skipped_so_far)))
    batches = iter_batches(ds, transform, bs, indices=shard[start:], fixed_blocks=True)
    last_commit = time.monotonic()
    try:
        for batch in batches:
            feats = np.empty((0, 0), dtype=np.float32)
            if batch.indices:
                x = model.preprocess.normalize(batch.images).to(device)  # (B, 3, h, w)
                f = _forward_features(
                    model, x, layer, pool=pool, precision=precision, channels_last=cl
                )  # (B, D)
                feats = f.numpy().astype(np.float32, copy=False)
                if run.dim is not None and feats.shape[1] != run.dim:
                    raise UserInputError(_dim_error(layer, int(feats.shape[1]), run.dim))
                chunk_rows = max(256, _CHUNK_FLOATS // max(1, feats.shape[1]))
            labels = [label_of(i) for i in batch.indices]
            pending.append(
                _Pending(start + batch.position, batch.indices, labels, feats, batch.skipped)
            )
            pending_rows += len(batch.indices)
            skipped_so_far += len(batch.skipped)
            if pending_rows >= chunk_rows or time.monotonic() - last_commit >= checkpoint_seconds:
                run.flush(pending)
                pending, pending_rows = [], 0
                last_commit = time.monotonic()
            on_progress(
                Progress(
                    "features", start + batch.position, total, "images", _skip_note(skipped_so_far)
                )
            )
        run.flush(pending)
    except UserInputError as exc:
        with contextlib.suppress(Exception):
            run.flush(pending)
        if world == 1:
            raise
        failed = str(exc)
    except BaseException:
        # Keep every finished batch, so that `resume` continues after the last one.
        with contextlib.suppress(Exception):
            run.flush(pending)
        raise
    finally:
        batches.close()
    agree(world, failed)
    if world == 1:
        if run.rows == 0:
            run.remove()
            raise UserInputError(
                _unreadable_error(total, ds, [run.skipped[0][2]] if run.skipped else [])
            )
        _finish([run], out, model, ds)
        run.remove()
        _remove_stale_temps(out)
        return load_features(out)
    return _finish_ranks(run, out, model, ds, layer, len(order), shape, rank, world)


def _size_error(model: ConvModel, a: tuple[int, ...], b: tuple[int, ...]) -> str:
    return (
        f"images of different sizes {a[1:]} and {b[1:]} cannot be batched; {model.name}'s "
        "preprocessing has no crop, so use images of one size."
    )


def _dim_error(layer: str, a: int, b: int) -> str:
    return (
        f"layer {layer} gave {a} features for one batch and {b} for another; use a crop or "
        "pool='avg'."
    )


def _unreadable_error(total: int, ds: ImageDataset, problems: Sequence[str]) -> str:
    return (
        f"None of the {total} images of {ds.name} could be read "
        f"(first problem: {problems[0] if problems else 'unknown'})."
    )


def _finish_ranks(
    run: _FeatureRun,
    out: Path,
    model: ConvModel,
    ds: ImageDataset,
    layer: str,
    total: int,
    shape: Sequence[tuple[int, ...]],
    rank: int,
    world: int,
) -> FeatureFile:
    """Under torchrun, once every rank has committed its share: rank 0 merges the ranks'
    folders into `out` while the others wait; then each rank removes its own folder."""
    mine = {
        "rows": run.rows,
        "dim": run.dim,
        "shape": list(shape[0]) if shape else None,
        "problem": run.skipped[0][2] if run.skipped else None,
    }
    infos = all_gather_objects(world, mine)
    # Every rank reaches the same verdict from the same facts, so all raise alike.
    dims = sorted({int(i["dim"]) for i in infos if i["rows"]})
    shapes = sorted({tuple(i["shape"]) for i in infos if i["shape"] is not None})
    if sum(int(i["rows"]) for i in infos) == 0:
        run.remove()
        problems = [str(i["problem"]) for i in infos if i["problem"] is not None]
        raise UserInputError(_unreadable_error(total, ds, problems))
    if len(shapes) > 1:
        raise UserInputError(_size_error(model, shapes[0], shapes[1]))
    if len(dims) > 1:
        raise UserInputError(_dim_error(layer, dims[0], dims[1]))
    failure: BaseException | None = None
    message: str | None = None
    if rank == 0:
        try:
            runs = [run]
            for r in range(1, world):
                runs.append(_rank_run(run, out, r, world, int(infos[r]["rows"])))
            _finish(runs, out, model, ds)
            _remove_stale_temps(out)
        except BaseException as exc:
            failure = exc
            text = " ".join(str(exc).split()) or type(exc).__name__
            message = f"rank 0 could not write {out}: {text.rstrip('.')}."
    message = broadcast_object(world, message)
    if failure is not None:
        raise failure
    if message is not None:
        raise UserInputError(message)
    run.remove()
    return load_features(out)


def _rank_run(run: _FeatureRun, out: Path, r: int, world: int, rows: int) -> _FeatureRun:
    """Rank `r`'s finished folder, as rank 0 sees it."""
    folder = partial_path(out, rank=r, world=world)
    if not (folder / ChunkLog.STATE).is_file():
        raise UserInputError(
            f"rank 0 cannot see {folder}, written by rank {r}; under torchrun every rank "
            "must write to the same filesystem."
        )
    other = _FeatureRun.open(folder, {**run.config, "rank": r}, resume=True, out=out)
    if other.rows != rows:
        raise UserInputError(
            f"{folder} holds {other.rows} rows, but rank {r} finished with {rows}; is another "
            f"run writing {out}?"
        )
    return other


def _skip_note(skipped: int) -> str:
    return f"{skipped} skipped" if skipped else ""


def _merged(runs: Sequence[_FeatureRun], key: str, rows: int = 4096) -> Iterator[NDArray[Any]]:
    """The `key` rows of every run's chunks in ascending dataset index, a few thousand rows at
    a time. Each run's rows ascend already and the runs' rows are disjoint (rank shares of
    one order), so this is a k-way merge that holds one chunk per run."""
    if len(runs) == 1:
        yield from runs[0].iter_chunks(key)
        return
    sources = [zip(r.iter_chunks("indices"), r.iter_chunks(key), strict=True) for r in runs]
    heads: list[tuple[NDArray[Any], NDArray[Any]] | None] = [next(s, None) for s in sources]
    at = [0] * len(runs)
    pieces: list[NDArray[Any]] = []
    held = 0
    while True:
        nxt: dict[int, int] = {}  # run → its next dataset index
        for j, source in enumerate(sources):
            head = heads[j]
            while head is not None and at[j] >= len(head[0]):
                head, at[j] = next(source, None), 0
            heads[j] = head
            if head is not None:
                nxt[j] = int(head[0][at[j]])
        if not nxt:
            break
        j = min(nxt, key=nxt.__getitem__)
        head = heads[j]
        assert head is not None
        idx, data = head
        others = [v for o, v in nxt.items() if o != j]
        end = len(idx) if not others else int(np.searchsorted(idx, min(others)))
        pieces.append(data[at[j] : end])
        held += end - at[j]
        at[j] = end
        if held >= rows:
            yield np.concatenate(pieces)
            pieces, held = [], 0
    if pieces:
        yield np.concatenate(pieces)


def _finish(runs: Sequence[_FeatureRun], out: Path, model: ConvModel, ds: ImageDataset) -> None:
    """Stream the chunks of `runs` (one, or one per rank) into the final file."""
    from convscope import __version__

    n = sum(r.rows for r in runs)
    d = int(next(r.dim for r in runs if r.rows and r.dim is not None))
    indices = np.concatenate(list(_merged(runs, "indices")))  # (N,)
    labels = np.concatenate(list(_merged(runs, "labels")))  # (N,)
    skipped = sorted((s for r in runs for s in r.skipped), key=lambda s: int(s[0]))
    idents = [ds.ident(int(i)) for i in indices]
    if type(ds).__name__ == "ImageFolder":  # absolute, so the file works from anywhere
        idents = [os.path.abspath(i) for i in idents]
    cfg = runs[0].config
    classes = ds.classes
    metadata = {
        "format": FORMAT,
        "convscope_version": __version__,
        "model": str(cfg["model"]),
        "weights": str(cfg["weights"]),
        "weights_arg": weights_argument(model.source),
        "layer": str(cfg["layer"]),
        "layer_dotted": str(cfg["layer_dotted"]),
        "pool": str(cfg["pool"]),
        "precision": str(cfg["precision"]),
        "dataset": str(cfg["dataset"]),
        "dataset_split": str(cfg["dataset_split"]),
        "dataset_size": str(cfg["dataset_size"]),
        "classes": json.dumps(classes),
        "idents": json.dumps(idents, ensure_ascii=False),
        "skipped": str(len(skipped)),
        "skipped_idents": json.dumps([s[1] for s in skipped], ensure_ascii=False),
        "count": str(n),
        "dim": str(d),
    }
    write_safetensors(
        out,
        [
            StreamedTensor("indices", np.dtype(np.int64), (n,), lambda: [indices]),
            StreamedTensor("labels", np.dtype(np.int64), (n,), lambda: [labels]),
            StreamedTensor(
                "features", np.dtype(np.float32), (n, d), lambda: _merged(runs, "features")
            ),
        ],
        metadata,
    )
