"""Batches of images from a dataset, skipping unreadable files, with background decoding."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from convscope.data.datasets import ImageDataset, Item, Skipped, iter_items
from convscope.errors import UserInputError

__all__ = ["Batch", "iter_batches"]


@dataclass(frozen=True)
class Batch:
    indices: list[int]  # dataset indices of the images in `images`, in order
    images: Tensor  # (B, 3, H, W), after `transform`
    skipped: list[Skipped] = field(default_factory=list)  # unreadable items met on the way
    position: int = 0  # how many dataset indices (good or skipped) were consumed so far


def iter_batches(
    dataset: ImageDataset,
    transform: Callable[[Tensor], Tensor],
    batch_size: int,
    *,
    indices: Sequence[int] | None = None,
    prefetch: int = 2,
    fixed_blocks: bool = False,
) -> Generator[Batch, None, None]:
    """Yield batches of `transform(image)` (each (3, h, w), equal sizes) in dataset order.

    Decoding runs in a background thread, `prefetch` batches ahead; closing the generator
    (or leaving a `for` loop over it by an exception, Ctrl-C included, once it is closed or
    collected) stops that thread and waits for it. Unreadable items are
    reported in `Batch.skipped` (a final batch may carry only skipped items and no images).
    By default a batch is filled with readable images; with `fixed_blocks`, each batch is one
    block of `batch_size` consecutive entries of `indices` (smaller where some are unreadable),
    so which images share a batch does not depend on what was skipped before.
    """
    if batch_size < 1:
        raise UserInputError(f"batch size must be at least 1, got {batch_size}.")
    order = list(range(len(dataset))) if indices is None else list(indices)
    out: queue.Queue[Batch | BaseException | None] = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()

    def put(got: Batch | BaseException | None) -> bool:
        """Hand `got` to the consumer; False once it has stopped listening."""
        while not stop.is_set():
            try:
                out.put(got, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            idx: list[int] = []
            imgs: list[Tensor] = []
            skipped: list[Skipped] = []
            pos = 0
            for item in iter_items(dataset, order):
                if stop.is_set():
                    return
                pos += 1
                if isinstance(item, Skipped):
                    skipped.append(item)
                    if fixed_blocks and pos % batch_size == 0:
                        images = torch.stack(imgs) if imgs else torch.empty(0)
                        if not put(Batch(idx, images, skipped, pos)):
                            return
                        idx, imgs, skipped = [], [], []
                    continue
                assert isinstance(item, Item)
                imgs.append(transform(item.image))
                idx.append(order[pos - 1])
                full = pos % batch_size == 0 if fixed_blocks else len(imgs) == batch_size
                if full:
                    if not put(Batch(idx, torch.stack(imgs), skipped, pos)):
                        return
                    idx, imgs, skipped = [], [], []
            if imgs or skipped:
                images = torch.stack(imgs) if imgs else torch.empty(0)
                if not put(Batch(idx, images, skipped, pos)):
                    return
            put(None)
        except BaseException as exc:  # handed to the consumer, re-raised there
            put(exc)

    worker = threading.Thread(target=produce, daemon=True, name="convscope-batches")
    worker.start()
    try:
        while True:
            got = out.get()
            if got is None:
                return
            if isinstance(got, BaseException):
                raise got
            yield got
    finally:
        stop.set()
        while worker.is_alive():  # drain so the producer can finish
            with contextlib.suppress(queue.Empty):
                out.get(timeout=0.05)
