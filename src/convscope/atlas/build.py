"""`build_atlas`: a static "microscope" site of a model, written into one folder.

    result = build_atlas(model, "sample-crops", ["block6", "block10"], out=Path("atlas"))
    result.index  # atlas/index.html: open it from the filesystem

For each chosen channel of each layer the site shows the feature visualization (the lucid
preset of `visualize`, channels optimized in batches), a few diverse images of it (the
diversity term of Olah et al. 2017), its top-k dataset patches with guided backprop (the
streaming scan of `scan_top_activations`, as `convscope top-patches` draws them) and, when the
dataset has labels, its mean activation per class (`class_means` of the layer's average-pooled
features). A t-SNE map of the dataset in the model's feature space shows each image's nearest
neighbours when clicked.

The work is cut into jobs (one per dataset pass, synthesis batch, channel and map), each
written atomically and recorded with its key and the hashes of its outputs (see
`convscope.atlas.store`): a run into the same folder continues where an interrupted one
stopped, and a run that finds everything done computes nothing. Long jobs keep checkpoints
(the scans' states, the synthesis loop's checkpoints), so even a killed run loses little.
Under torchrun (`rank`, `world`), the dataset passes are sharded as `extract_features` and
`scan_top_activations` shard them, the other jobs are dealt out to the ranks in turn, and
rank 0 writes the pages once every rank is done.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convscope.atlas.feature_map import MAP_DATA, build_map
from convscope.atlas.pages import (
    ChannelInfo,
    ClassBar,
    LayerInfo,
    PatchInfo,
    channel_html,
    index_html,
    map_html,
)
from convscope.atlas.patches import channel_entries, channel_patches
from convscope.atlas.store import JobStore, digest, slug, write_if_changed
from convscope.data.datasets import ImageDataset, load_dataset
from convscope.data.images import save_pngs
from convscope.data.stream import save_tensors
from convscope.errors import UserInputError, check_whole
from convscope.events import Progress, ProgressCallback, no_progress
from convscope.inspect.activations import parse_channels
from convscope.inspect.class_means import class_means
from convscope.inspect.embed import METHODS, Method
from convscope.inspect.features import FeatureFile, extract_features, load_features
from convscope.inspect.scan import TopK, agree, broadcast_object, scan_top_activations
from convscope.models.base import ConvModel
from convscope.probe import ReceptiveField, receptive_fields
from convscope.synthesize.recipes.visualize import layer_shape, visualize

__all__ = [
    "DEFAULT_CHANNELS",
    "FORMAT",
    "MANIFEST",
    "AtlasResult",
    "build_atlas",
    "check_atlas_folder",
    "default_map_layer",
]

FORMAT = "convscope-atlas/1"
MANIFEST = "atlas.json"
DEFAULT_CHANNELS = 8
"""Channels per layer when none are chosen: the first this many."""
PATCH_TILE = 128  # patches larger than this many pixels are shrunk to it


@dataclass(frozen=True)
class AtlasResult:
    index: Path  # the front page
    layers: tuple[LayerInfo, ...]
    computed: int  # units of work this process did in this run
    reused: int  # units found done (by an earlier run, or by another rank)
    computed_kinds: tuple[str, ...] = field(default_factory=tuple)  # the kind of each


def check_atlas_folder(out: Path) -> None:
    """Refuse, in one sentence, a folder the atlas cannot be written into: its parent is
    missing (convscope creates only the atlas folder itself), it is a file, it cannot be
    written, or it holds other things than an atlas."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"Cannot write the atlas into {out}: it exists and is not a folder.")
    if not out.exists():
        parent = out.parent
        if not parent.is_dir():
            raise UserInputError(
                f"Cannot write the atlas into {out}: the folder {parent} does not exist."
            )
        if not os.access(parent, os.W_OK | os.X_OK):
            raise UserInputError(f"Cannot write the atlas into {out}: {parent} is not writable.")
        return
    if not os.access(out, os.W_OK | os.X_OK):
        raise UserInputError(f"Cannot write the atlas into {out}: it is not writable.")
    ours = (out / MANIFEST).is_file() or (out / ".jobs").is_dir()
    if not ours and any(out.iterdir()):
        raise UserInputError(
            f"{out} is not empty and holds no atlas; give a new or empty folder (or an atlas "
            "folder to continue)."
        )


def default_map_layer(model: ConvModel, layers: Sequence[str]) -> str:
    """The layer whose pooled features place the images on the map: the model's `embed`
    alias, else its default layer, else the last of `layers`."""
    if "embed" in model.aliases:
        return "embed"
    if model.default_layer is not None:
        return model.default_layer
    return layers[-1]


def _check_float(value: object, name: str, *, positive: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)):  # type: ignore[arg-type]
        raise UserInputError(f"{name} must be a finite number, got {value!r}.")
    v = float(value)  # type: ignore[arg-type]
    if (positive and v <= 0) or v < 0:
        raise UserInputError(
            f"{name} must be {'more than' if positive else 'at least'} 0, got {v}."
        )
    return v


def _channels(spec: str | Sequence[int] | None, width: int, layer: str) -> list[int]:
    if spec is None:
        return list(range(min(DEFAULT_CHANNELS, width)))
    if isinstance(spec, str):
        return parse_channels(spec, width, layer=layer)
    chosen = list(dict.fromkeys(int(c) for c in spec))
    if not chosen:
        raise UserInputError(f"no channel is chosen for layer {layer}.")
    for c in chosen:
        if not 0 <= c < width:
            raise UserInputError(f"channel {c} is out of range 0..{width - 1} for layer {layer}.")
    return chosen


def _dataset_key(ds: ImageDataset, order: Sequence[int]) -> dict[str, Any]:
    """The dataset's identity: its name, size and the names of the images used (hashed), so a
    folder whose files changed is scanned again."""
    h = hashlib.sha256()
    for i in order:
        h.update(ds.ident(i).encode("utf-8", "surrogateescape") + b"\n")
    return {"dataset": ds.name, "size": len(ds), "count": len(order), "idents": h.hexdigest()[:16]}


@dataclass(frozen=True)
class _Layer:
    name: str
    dotted: str
    folder: str  # "layers/<slug>"
    width: int
    shape: tuple[int, ...]
    channels: tuple[int, ...]


@dataclass(frozen=True)
class _Job:
    kind: str  # "vis", "diverse", "patches" or "map"
    key: dict[str, Any]
    label: str
    run: Callable[[], list[Path]]  # computes and writes the outputs; returns them


def _vis_name(c: int) -> str:
    return f"c{c:04d}.png"


def _diverse_name(c: int, j: int) -> str:
    return f"c{c:04d}-d{j}.png"


def _patch_name(c: int, j: int) -> str:
    return f"c{c:04d}-p{j}.png"


def _page_name(c: int) -> str:
    return f"c{c:04d}.html"


def build_atlas(
    model: ConvModel,
    dataset: ImageDataset | str | Path,
    layers: Sequence[str],
    *,
    out: Path,
    channels: str | Sequence[int] | None = None,
    steps: int = 256,
    size: int = 128,
    vis_batch: int = 8,
    diverse: int = 4,
    diversity_weight: float = 100.0,
    k: int = 8,
    batch_size: int = 4,
    limit: int | None = None,
    map_layer: str | None = None,
    map_method: Method = "tsne",
    map_points: int = 2000,
    neighbors: int = 8,
    perplexity: float = 30.0,
    thumb: int = 48,
    seed: int = 0,
    rank: int = 0,
    world: int = 1,
    on_progress: ProgressCallback = no_progress,
) -> AtlasResult:
    """Write (or complete) the atlas of `model` on `dataset` into the folder `out`.

    Args:
        layers: layer names or aliases (spatial layers: their outputs are (B, C, H, W)).
        channels: the channels of every layer, as a list or text ("0-7", "3,9", "all");
            default: the first `DEFAULT_CHANNELS` of each.
        steps, size, seed: the lucid preset's steps, the images' side, and the seed.
        vis_batch: channels optimized together in one batch (one image each).
        diverse, diversity_weight: images per channel optimized together with
            `diversity_weight` × the diversity term (0 for none).
        k, batch_size, limit: the top-k patches per channel, the scans' batch size, and the
            first `limit` images of the dataset only.
        map_layer: the layer whose average-pooled features the map places the images by
            (default: `default_map_layer`); `map_method` "tsne", "pca" or "umap";
            `map_points`: at most this many images on it (a random subset when larger);
            `neighbors`: how many nearest neighbours a click shows; `perplexity`: t-SNE's;
            `thumb`: the thumbnails' side in pixels.
        rank, world: this process's place under torchrun (`distributed_context()`).
        on_progress: `Progress` events: task "atlas" (unit "jobs", one per unit of work,
            counting those found done), and the events of the scans, the synthesis loop and
            the embedding.

    Returns where the front page is, and how much this run computed and found done.
    """
    steps = check_whole(steps, "steps", 1)
    size = check_whole(size, "size", 16)
    vis_batch = check_whole(vis_batch, "vis_batch", 1)
    diverse = check_whole(diverse, "diverse", 0)
    if diverse == 1:
        raise UserInputError("diverse must be 0 (no diverse images) or at least 2, got 1.")
    diversity_weight = _check_float(diversity_weight, "diversity_weight", positive=False)
    k = check_whole(k, "k", 1)
    batch_size = check_whole(batch_size, "batch_size", 1)
    if limit is not None:
        limit = check_whole(limit, "limit", 1)
    if map_method not in METHODS:
        raise UserInputError(f"map_method must be one of {', '.join(METHODS)}, not {map_method!r}.")
    map_points = check_whole(map_points, "map_points", 2)
    neighbors = check_whole(neighbors, "neighbors", 1)
    perplexity = _check_float(perplexity, "perplexity", positive=True)
    thumb = check_whole(thumb, "thumb", 8)
    if not layers:
        raise UserInputError("give at least one layer.")
    out = Path(out).expanduser()
    check_atlas_folder(out)

    ds = load_dataset(dataset) if isinstance(dataset, (str, Path)) else dataset
    n_all = len(ds)
    order = list(range(n_all if limit is None else min(limit, n_all)))
    if not order:
        raise UserInputError(f"dataset {ds.name} has no images.")
    if k > len(order):
        raise UserInputError(f"k = {k} is larger than the dataset ({len(order)} images).")
    shown = min(map_points, len(order))
    if map_method == "tsne" and shown < 4:
        raise UserInputError(f"a t-SNE map needs at least 4 images, got {shown}.")
    if neighbors >= shown:
        raise UserInputError(
            f"neighbors = {neighbors} leaves no room on a map of {shown} images; give "
            f"{shown - 1} or fewer."
        )
    plan: list[_Layer] = []
    seen: dict[str, str] = {}
    for name in layers:
        dotted = model.resolve(name)
        if dotted in seen:
            raise UserInputError(f"layer {name} is given twice (as {seen[dotted]} too).")
        seen[dotted] = name
        shape = layer_shape(model, name, (size, size))
        if len(shape) != 4:
            raise UserInputError(
                f"layer {name} has output shape {shape}; the atlas needs a spatial layer "
                "(B, C, H, W)."
            )
        folder = f"layers/{slug(name)}"
        if any(p.folder == folder for p in plan):
            folder = f"layers/{slug(name)}-{len(plan)}"
        chosen = _channels(channels, shape[1], name)
        plan.append(_Layer(name, dotted, folder, shape[1], shape, tuple(chosen)))
    map_name = map_layer or default_map_layer(model, layers)
    map_dotted = model.resolve(map_name)

    return _Builder(
        model=model,
        ds=ds,
        order=order,
        limit=limit,
        layers=plan,
        out=out,
        map_name=map_name,
        map_dotted=map_dotted,
        settings=dict(
            steps=steps,
            size=size,
            vis_batch=vis_batch,
            diverse=diverse,
            diversity_weight=diversity_weight,
            k=k,
            batch_size=batch_size,
            map_method=map_method,
            map_points=map_points,
            neighbors=neighbors,
            perplexity=perplexity,
            thumb=thumb,
            seed=seed,
        ),
        rank=rank,
        world=world,
        on_progress=on_progress,
    ).run()


class _Builder:
    """One run of `build_atlas`, once every argument is checked."""

    def __init__(
        self,
        *,
        model: ConvModel,
        ds: ImageDataset,
        order: list[int],
        limit: int | None,
        layers: list[_Layer],
        out: Path,
        map_name: str,
        map_dotted: str,
        settings: dict[str, Any],
        rank: int,
        world: int,
        on_progress: ProgressCallback,
    ) -> None:
        self.model = model
        self.ds = ds
        self.order = order
        self.limit = limit
        self.layers = layers
        self.out = out
        self.map_name = map_name
        self.map_dotted = map_dotted
        self.s = settings
        self.rank = rank
        self.world = world
        self.on_progress = on_progress
        self.store = JobStore(out)
        self.ids = {
            "format": FORMAT,  # a new layout of the outputs makes everything again
            "model": model.name,
            "weights": str(model.source),
            **_dataset_key(ds, order),
        }
        self.computed: list[str] = []
        self.reused = 0
        self.done = 0
        self.total = 0
        self.features: dict[str, FeatureFile] = {}  # by dotted layer
        self.tops: dict[str, TopK] = {}
        self.top_keys: dict[str, str] = {}  # digest of each layer's scan
        self.fields: dict[str, ReceptiveField | None] = {}

    # ---- bookkeeping -----------------------------------------------------------------------
    def _tick(self, label: str) -> None:
        self.on_progress(Progress("atlas", self.done, self.total, "jobs", label))

    def _finished(self, kind: str | None) -> None:
        if kind is None:
            self.reused += 1
        else:
            self.computed.append(kind)
        self.done += 1
        self._tick("")

    # ---- the dataset passes (every rank takes part) ---------------------------------------------
    def _features(self, name: str, dotted: str) -> FeatureFile:
        if dotted in self.features:
            return self.features[dotted]
        key = {
            "kind": "features",
            **self.ids,
            "layer": dotted,
            "pool": "avg",
            "batch_size": self.s["batch_size"],
        }
        path = self.out / "data" / f"features-{slug(name)}-{digest(key)}.safetensors"
        self._tick(f"features of {name}")
        if broadcast_object(self.world, self.store.done("features", key)):
            ff = load_features(path)
            self._finished(None)
        else:
            ff = extract_features(
                self.model,
                self.ds,
                name,
                out=path,
                pool="avg",
                batch_size=self.s["batch_size"],
                limit=self.limit,
                resume=True,
                rank=self.rank,
                world=self.world,
                on_progress=self.on_progress,
            )
            if self.rank == 0:
                self.store.finish("features", key, [path])
            self._finished("features")
        self.features[dotted] = ff
        return ff

    def _scan(self, layer: _Layer) -> TopK:
        from safetensors.torch import load_file

        key = {
            "kind": "topk",
            **self.ids,
            "layer": layer.dotted,
            "k": self.s["k"],
            "batch_size": self.s["batch_size"],
        }
        d = digest(key)
        path = self.out / "data" / f"topk-{slug(layer.name)}-{d}.safetensors"
        self.top_keys[layer.dotted] = d
        self._tick(f"top {self.s['k']} of {layer.name}")
        if broadcast_object(self.world, self.store.done("topk", key)):
            top = TopK.from_tensors(load_file(str(path)))
            self._finished(None)
        else:
            state = self.store.partial / f"topk-{d}-rank{self.rank}of{self.world}.safetensors"
            top = scan_top_activations(
                self.model,
                self.ds,
                layer.name,
                k=self.s["k"],
                batch_size=self.s["batch_size"],
                indices=self.order if self.limit is not None else None,
                state=state,
                resume=True,
                rank=self.rank,
                world=self.world,
                on_progress=self.on_progress,
            )
            if self.rank == 0:
                meta = {"model": self.model.name, "layer": layer.dotted, "dataset": self.ds.name}
                save_tensors(top.tensors(), path, meta)
                self.store.finish("topk", key, [path])
            with contextlib.suppress(OSError):
                state.unlink()
            self._finished("topk")
        self.tops[layer.dotted] = top
        return top

    # ---- the jobs (dealt out to the ranks) ------------------------------------------------------
    def _synthesis_key(self, layer: _Layer) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": self.ids["model"],
            "weights": self.ids["weights"],
            "layer": layer.dotted,
            "preset": "lucid",
            "steps": self.s["steps"],
            "size": self.s["size"],
            "seed": self.s["seed"],
        }

    def _vis_job(self, layer: _Layer, chunk: list[int]) -> _Job:
        key = {"kind": "vis", **self._synthesis_key(layer), "channels": chunk}

        def run() -> list[Path]:
            r = visualize(
                self.model,
                layer=layer.name,
                channels=chunk,
                preset="lucid",
                steps=self.s["steps"],
                size=self.s["size"],
                seed=self.s["seed"],
                checkpoint=self.store.checkpoint("vis", key),
                resume=True,
                on_progress=self.on_progress,
            )
            files = [self.out / layer.folder / _vis_name(c) for c in chunk]
            save_pngs(list(zip(files, r.images, strict=True)))  # (3, H, W) each
            return files

        first, last = chunk[0], chunk[-1]
        return _Job("vis", key, f"{layer.name} channels {first}–{last}", run)

    def _diverse_job(self, layer: _Layer, c: int) -> _Job:
        n, w = self.s["diverse"], self.s["diversity_weight"]
        key = {
            "kind": "diverse",
            **self._synthesis_key(layer),
            "channel": c,
            "batch": n,
            "diversity_weight": w,
        }

        def run() -> list[Path]:
            r = visualize(
                self.model,
                layer=layer.name,
                channel=c,
                batch=n,
                diversity_weight=w,
                preset="lucid",
                steps=self.s["steps"],
                size=self.s["size"],
                seed=self.s["seed"],
                checkpoint=self.store.checkpoint("diverse", key),
                resume=True,
                on_progress=self.on_progress,
            )
            files = [self.out / layer.folder / _diverse_name(c, j) for j in range(n)]
            save_pngs(list(zip(files, r.images, strict=True)))
            return files

        return _Job("diverse", key, f"{layer.name} channel {c}: {n} diverse images", run)

    def _patches_job(self, layer: _Layer, c: int) -> _Job:
        key = {
            "kind": "patches",
            **self.ids,
            "layer": layer.dotted,
            "channel": c,
            "scan": self.top_keys[layer.dotted],
            "tile": PATCH_TILE,
        }

        def run() -> list[Path]:
            if layer.dotted not in self.fields:
                side = self.model.preprocess.crop or 224
                found = receptive_fields(self.model, [layer.name], side)[layer.name]
                self.fields[layer.dotted] = found
            rf = self.fields[layer.dotted]
            if rf is None:
                raise UserInputError(f"layer {layer.name} has no spatial receptive field.")
            top = self.tops[layer.dotted]
            pictures = channel_patches(self.model, self.ds, layer.name, top, c, rf, tile=PATCH_TILE)
            files = [self.out / layer.folder / _patch_name(c, j) for j in range(len(pictures))]
            save_pngs(list(zip(files, pictures, strict=True)))
            return files

        return _Job("patches", key, f"{layer.name} channel {c}: top patches", run)

    def _map_job(self, ff: FeatureFile) -> _Job:
        names = ("map_method", "map_points", "neighbors", "perplexity", "thumb", "seed")
        key = {"kind": "map", **self.ids, "layer": self.map_dotted, **{n: self.s[n] for n in names}}

        def run() -> list[Path]:
            return build_map(
                ff,
                self.ds,
                self.out,
                points=self.s["map_points"],
                neighbors=self.s["neighbors"],
                method=self.s["map_method"],
                perplexity=self.s["perplexity"],
                seed=self.s["seed"],
                thumb=self.s["thumb"],
                on_progress=self.on_progress,
            )

        return _Job("map", key, f"map of the dataset at {self.map_name}", run)

    def _jobs(self, map_features: FeatureFile) -> list[_Job]:
        jobs: list[_Job] = []
        b = self.s["vis_batch"]
        for layer in self.layers:
            chans = list(layer.channels)
            jobs += [self._vis_job(layer, chans[i : i + b]) for i in range(0, len(chans), b)]
        jobs.append(self._map_job(map_features))
        if self.s["diverse"]:
            jobs += [self._diverse_job(layer, c) for layer in self.layers for c in layer.channels]
        jobs += [self._patches_job(layer, c) for layer in self.layers for c in layer.channels]
        return jobs

    # ---- the run -----------------------------------------------------------------------------
    def run(self) -> AtlasResult:
        out = self.out
        out.mkdir(exist_ok=True)
        self.store.prepare()
        for folder in ["data", "map", *(layer.folder for layer in self.layers)]:
            (out / folder).mkdir(parents=True, exist_ok=True)
        passes = 2 * len(self.layers)
        if self.map_dotted not in {layer.dotted for layer in self.layers}:
            passes += 1
        self.total = passes  # the jobs are added once they are known
        self._tick("dataset passes")
        for layer in self.layers:
            self._features(layer.name, layer.dotted)
            self._scan(layer)
        map_features = self._features(self.map_name, self.map_dotted)
        jobs = self._jobs(map_features)
        mine = jobs[self.rank :: self.world]
        self.total = passes + len(mine)
        error: str | None = None
        try:
            for job in mine:
                if self.store.done(job.kind, job.key):
                    self._finished(None)
                    continue
                self._tick(job.label)
                files = job.run()
                self.store.finish(job.kind, job.key, files, {"rank": self.rank})
                self._finished(job.kind)
        except UserInputError as exc:
            if self.world == 1:
                raise
            error = str(exc)
        agree(self.world, error)  # also: every rank is done before rank 0 writes the pages
        infos = self._layer_infos()
        index = out / "index.html"
        if self.rank == 0:
            self._pages(infos)
        return AtlasResult(
            index, tuple(infos), len(self.computed), self.reused, tuple(self.computed)
        )

    # ---- the pages (rank 0) --------------------------------------------------------------------
    def _layer_infos(self) -> list[LayerInfo]:
        infos = []
        for layer in self.layers:
            ff = self.features[layer.dotted]
            means = None
            if bool((ff.labels >= 0).any()):
                means = class_means(ff.features, ff.labels, classes=ff.classes)
            top = self.tops[layer.dotted]
            chans = []
            for c in layer.channels:
                entries = channel_entries(top, c)
                strongest = entries[0].value if entries else None
                bars: tuple[ClassBar, ...] = ()
                if means is not None:
                    bars = tuple(ClassBar(n, cnt, m) for n, cnt, m in means.column(c))
                diverse = tuple(_diverse_name(c, j) for j in range(self.s["diverse"]))
                patches = tuple(
                    PatchInfo(_patch_name(c, j), e.value, self.ds.ident(e.image))
                    for j, e in enumerate(entries)
                )
                chans.append(
                    ChannelInfo(c, _page_name(c), _vis_name(c), diverse, patches, strongest, bars)
                )
            infos.append(
                LayerInfo(
                    layer.name, layer.dotted, layer.folder, layer.width, layer.shape, tuple(chans)
                )
            )
        return infos

    def _pages(self, infos: Sequence[LayerInfo]) -> None:
        from convscope import __version__

        out, s = self.out, self.s
        n = len(self.order)
        dataset = self.ds.name
        subtitle = (
            f"{dataset} · {n} images · feature visualizations: lucid, {s['steps']} steps at "
            f"{s['size']} px · top {s['k']} patches · weights: {self.model.source}"
        )
        for info in infos:
            for j in range(len(info.channels)):
                page = channel_html(
                    model=self.model.name,
                    dataset=dataset,
                    layer=info,
                    position=j,
                    k=s["k"],
                    images=n,
                )
                write_if_changed(out / info.folder / info.channels[j].page, page)
        data = json.loads((out / MAP_DATA).read_text(encoding="utf-8"))
        method = {"tsne": "t-SNE", "pca": "PCA", "umap": "UMAP"}[s["map_method"]]
        page = map_html(
            data,
            title=f"{self.model.name} · {self.map_name} · {method}",
            subtitle=f"{dataset}, by the average-pooled features of {self.map_name}",
        )
        write_if_changed(out / "map.html", page)
        front = index_html(
            title=self.model.name,
            subtitle=subtitle,
            layers=infos,
            has_map=True,
            footer=f"Made by convscope {__version__}.",
        )
        write_if_changed(out / "index.html", front)
        manifest = {
            "format": FORMAT,
            "model": self.model.name,
            "weights": str(self.model.source),
            "dataset": dataset,
            "images": n,
            "layers": {i.name: list(c.channel for c in i.channels) for i in infos},
            "map_layer": self.map_name,
            "settings": s,
        }
        write_if_changed(out / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
