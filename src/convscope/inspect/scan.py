"""One streaming pass over a dataset that keeps, for every channel of a layer at once, the k
(image, location) pairs with the highest activation.

Each image contributes at most one entry per channel: its strongest location (the first one in
row-major order on ties). Ranking is deterministic: higher value first, then lower dataset
index. Nothing but the running (C, k) table is kept, so memory does not grow with the dataset.
The scan can be resumed from a state file, and under `torchrun` it shards the dataset across
ranks and merges the per-rank tables exactly, so the result equals the single-process one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import safe_open
from torch import Tensor

from convscope.data.batches import Batch, iter_batches
from convscope.data.datasets import ImageDataset
from convscope.data.stream import save_tensors
from convscope.errors import UserInputError
from convscope.events import Progress, ProgressCallback, no_progress
from convscope.models.base import ConvModel
from convscope.probe import Probe

__all__ = [
    "ScanConfig",
    "TopK",
    "agree",
    "all_gather_objects",
    "broadcast_object",
    "distributed_context",
    "merge_topk",
    "scan_top_activations",
]

Precision = Literal["fp32", "bf16"]


@dataclass(frozen=True)
class TopK:
    """Per channel, the k best (value, image, y, x), best first. Empty slots: value -inf,
    image -1."""

    values: Tensor  # (C, k) float32
    images: Tensor  # (C, k) int64, dataset indices
    ys: Tensor  # (C, k) int64, row in the layer's output
    xs: Tensor  # (C, k) int64
    seen: int = 0  # images that contributed

    @property
    def k(self) -> int:
        return int(self.values.shape[1])

    @staticmethod
    def empty(channels: int, k: int) -> TopK:
        return TopK(
            torch.full((channels, k), float("-inf")),
            torch.full((channels, k), -1, dtype=torch.int64),
            torch.zeros(channels, k, dtype=torch.int64),
            torch.zeros(channels, k, dtype=torch.int64),
        )

    def tensors(self) -> dict[str, Tensor]:
        return {
            "values": self.values.contiguous(),
            "images": self.images.contiguous(),
            "ys": self.ys.contiguous(),
            "xs": self.xs.contiguous(),
            "seen": torch.tensor([self.seen], dtype=torch.int64),
        }

    @staticmethod
    def from_tensors(t: dict[str, Tensor]) -> TopK:
        return TopK(t["values"], t["images"], t["ys"], t["xs"], int(t["seen"][0]))


def _rank(values: Tensor, images: Tensor, k: int) -> Tensor:
    """Column order (C, k) of the best k candidates: value descending, then image ascending.
    Empty slots (image -1) go last."""
    big = torch.iinfo(torch.int64).max
    key_img = torch.where(images < 0, torch.full_like(images, big), images)
    by_img = key_img.argsort(dim=1, stable=True)
    vals = values.gather(1, by_img)
    by_val = vals.argsort(dim=1, descending=True, stable=True)
    return by_img.gather(1, by_val)[:, :k]


def merge_topk(parts: Sequence[TopK], k: int | None = None) -> TopK:
    """Merge tables exactly (same channels); the result is independent of the parts' order."""
    if not parts:
        raise UserInputError("nothing to merge.")
    k = parts[0].k if k is None else k
    values = torch.cat([p.values for p in parts], dim=1)
    images = torch.cat([p.images for p in parts], dim=1)
    ys = torch.cat([p.ys for p in parts], dim=1)
    xs = torch.cat([p.xs for p in parts], dim=1)
    order = _rank(values, images, k)
    return TopK(
        values.gather(1, order),
        images.gather(1, order),
        ys.gather(1, order),
        xs.gather(1, order),
        sum(p.seen for p in parts),
    )


def _batch_candidates(act: Tensor, indices: Sequence[int]) -> TopK:
    """(B, C, H, W) activations → per channel, each image's strongest location: (C, B)."""
    b, c, h, w = act.shape
    flat = act.detach().float().reshape(b, c, h * w)
    values, pos = flat.max(dim=2)  # (B, C); first max on ties
    img = torch.tensor(list(indices), dtype=torch.int64).view(b, 1).expand(b, c)
    return TopK(
        values.t().contiguous().cpu(),
        img.t().contiguous(),
        (pos // w).t().contiguous().cpu(),
        (pos % w).t().contiguous().cpu(),
        b,
    )


@dataclass(frozen=True)
class ScanConfig:
    """What a scan computes; stored in state files so a resume cannot mix two scans."""

    model: str
    layer: str
    k: int
    dataset: str
    size: int  # dataset length
    precision: str
    rank: int = 0
    world: int = 1

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


def _save_state(path: Path, top: TopK, position: int, config: ScanConfig) -> None:
    meta = {"convscope": "scan-state", "config": config.to_json(), "position": str(position)}
    save_tensors(top.tensors(), path, meta)


def _load_state(path: Path, config: ScanConfig) -> tuple[TopK, int]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception:
        raise UserInputError(f"{path} is not a readable scan state file.") from None
    if meta.get("convscope") != "scan-state":
        raise UserInputError(f"{path} is not a convscope scan state file.")
    if meta.get("config") != config.to_json():
        raise UserInputError(
            f"{path} belongs to a different scan (model, layer, k, dataset or precision "
            "differ); delete it or drop --resume."
        )
    return TopK.from_tensors(tensors), int(meta["position"])


def distributed_context() -> tuple[int, int]:
    """(rank, world size). Under `torchrun` (WORLD_SIZE > 1) this joins the process group:
    gloo for CPU tensors (and the small objects ranks exchange), plus nccl for CUDA tensors
    when CUDA is available."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def all_gather_objects(world: int, obj: Any) -> list[Any]:
    """Every rank's `obj` (small and picklable), in rank order; `[obj]` for one process."""
    if world == 1:
        return [obj]
    import torch.distributed as dist

    got: list[Any] = [None] * world
    dist.all_gather_object(got, obj)
    return got


def broadcast_object(world: int, obj: Any) -> Any:
    """Rank 0's `obj` (small and picklable), on every rank; `obj` itself for one process."""
    if world == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree(world: int, error: str | None) -> None:
    """Under torchrun, raise on every rank the first error any rank met (so that no rank waits
    for one that gave up, and all report the same sentence); it is also a barrier. Nothing
    happens for one process (whose caller raises its own error)."""
    if world == 1:
        return
    first = next((e for e in all_gather_objects(world, error) if e is not None), None)
    if first is not None:
        raise UserInputError(first)


def _all_gather_topk(top: TopK, world: int) -> TopK:
    import torch.distributed as dist

    parts = []
    for name in ("values", "images", "ys", "xs", "seen"):
        t = top.tensors()[name]
        bucket = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(bucket, t)
        parts.append(bucket)
    tables = [TopK(v, i, y, x, int(s[0])) for v, i, y, x, s in zip(*parts, strict=True)]
    return merge_topk(tables, top.k)


def _autocast(
    device: torch.device, precision: Precision
) -> contextlib.AbstractContextManager[None]:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def scan_top_activations(
    model: ConvModel,
    dataset: ImageDataset,
    layer: str,
    *,
    k: int = 9,
    batch_size: int = 4,
    precision: Precision = "fp32",
    channels_last: bool = True,
    indices: Sequence[int] | None = None,
    state: Path | None = None,
    resume: bool = False,
    checkpoint_every: int = 25,
    checkpoint_seconds: float = 30.0,
    rank: int = 0,
    world: int = 1,
    on_progress: ProgressCallback = no_progress,
) -> TopK:
    """Scan `dataset` (or `indices` of it) and return the top-k table of `layer`.

    Batches are fixed blocks of `batch_size` consecutive images (smaller where some are
    unreadable).
    `state`: a file to checkpoint into every `checkpoint_every` batches, at least every
    `checkpoint_seconds`, and on Ctrl-C (so even kill -9 loses at most about that much work);
    with `resume=True` the scan continues from it. `rank`/`world`: this process's shard (every
    `world`-th image from `rank`); when `world > 1` the tables are all-gathered and merged, so
    every rank returns the full result.
    """
    if k < 1:
        raise UserInputError(f"k must be at least 1, got {k}.")
    if precision not in ("fp32", "bf16"):
        raise UserInputError(f"precision must be fp32 or bf16, got {precision!r}.")
    order = list(range(len(dataset))) if indices is None else list(indices)
    if not order:
        raise UserInputError(f"dataset {dataset.name} has no images.")
    if k > len(order):
        raise UserInputError(f"k = {k} is larger than the dataset ({len(order)} images).")
    if checkpoint_every < 1:
        raise UserInputError(f"checkpoint_every must be at least 1, got {checkpoint_every}.")
    if not (isinstance(checkpoint_seconds, (int, float)) and math.isfinite(checkpoint_seconds)):
        raise UserInputError(
            f"checkpoint_seconds must be a finite number of seconds, got {checkpoint_seconds!r}."
        )
    if checkpoint_seconds <= 0:
        raise UserInputError(f"checkpoint_seconds must be more than 0, got {checkpoint_seconds}.")
    dotted = model.resolve(layer)
    # Shard by whole batches, so every image is computed in the same batch as in a
    # single-process scan and the merged result is bit-identical.
    blocks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    shard = [i for block in blocks[rank::world] for i in block]
    config = ScanConfig(model.name, dotted, k, dataset.name, len(dataset), precision, rank, world)
    top: TopK | None = None
    position = 0
    if resume and state is not None and state.exists():
        top, position = _load_state(state, config)
    device = model.device
    module = model.module
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    probe = Probe(model, [dotted], stop_early=True)
    done = position
    on_progress(Progress("top-patches", done, len(shard)))
    batches: Iterator[Batch] = iter(())
    last_save = time.monotonic()
    try:
        with torch.inference_mode(), probe, _autocast(device, precision):
            batches = iter_batches(
                dataset,
                lambda im: model.preprocess(im)[0],  # (3, h, w) normalized
                batch_size,
                indices=shard[position:],
                fixed_blocks=True,
            )
            for n_batch, batch in enumerate(batches, start=1):
                if batch.indices:
                    x = batch.images.to(device)  # (B, 3, h, w)
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    probe.run(x)
                    act = probe.activations[dotted]  # (B, C, H, W)
                    if act.dim() != 4:
                        raise UserInputError(
                            f"layer {layer} has output shape {tuple(act.shape)}; top patches "
                            "need a spatial (B, C, H, W) layer."
                        )
                    cand = _batch_candidates(act, batch.indices)
                    new = merge_topk([cand] if top is None else [top, cand], k)
                    if new.k < k:
                        new = merge_topk([new, TopK.empty(new.values.shape[0], k)], k)
                    # One assignment of two names (Python checks for Ctrl-C at calls and
                    # loops, not between stores), so a state saved on interruption never
                    # counts this batch without holding it, or holds it without counting it.
                    after = position + batch.position
                    top, done = new, after
                else:
                    done = position + batch.position
                on_progress(Progress("top-patches", done, len(shard)))
                due = n_batch % checkpoint_every == 0
                due = due or time.monotonic() - last_save >= checkpoint_seconds
                if state is not None and top is not None and due:
                    _save_state(state, top, done, config)
                    last_save = time.monotonic()
    except KeyboardInterrupt:
        if state is not None and top is not None:
            _save_state(state, top, done, config)
        raise
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
        if channels_last:
            module.to(memory_format=torch.contiguous_format)
    if top is None:
        raise UserInputError(f"none of the {len(shard)} images could be read.")
    if state is not None:
        _save_state(state, top, len(shard), config)
    if world > 1:
        top = _all_gather_topk(top, world)
    return top
