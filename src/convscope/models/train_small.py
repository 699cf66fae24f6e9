"""Train `smallnet` on a small grayscale dataset (digits, mnist5k or Fashion-MNIST) on the CPU.

Deterministic for a seed: the train/test split comes from its own seeded generator
(`split_indices`), the initial weights from `torch.manual_seed(seed)` (inside `fork_rng`, so
the caller's random state is left alone), and the batch order and the random shifts from a
second seeded generator; training runs on one CPU thread unless told otherwise, so the bits do
not depend on the machine's core count. Images go through the model's own `Preprocess` (resize
to 28×28, then normalize), so training and inference see the same input. The only augmentation
is a random shift of up to `shift` pixels, with zero (background) fill.

`save_checkpoint` writes the weights as safetensors, atomically, with metadata that records how
they were made, including the `convscope train-small` command that remakes them.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from convscope.data.stream import save_tensors
from convscope.errors import UnknownNameError, UserInputError
from convscope.events import Progress, ProgressCallback, no_progress
from convscope.models.base import ConvModel, WeightSource
from convscope.models.smallnet import FORMAT, PREPROCESS, SmallNet, smallnet_model

__all__ = [
    "TRAIN_DATASETS",
    "TrainResult",
    "checkpoint_command",
    "load_training_data",
    "save_checkpoint",
    "split_indices",
    "train_small",
]

TRAIN_DATASETS: tuple[str, ...] = ("digits", "mnist5k", "fashion-mnist")
_CHUNK = 4096  # images per resize call when preparing the data


@dataclass(frozen=True)
class TrainResult:
    """A trained smallnet (in eval mode), its accuracy on the held-out split, the mean training
    loss of each epoch, and the settings that made it (JSON-serializable)."""

    model: ConvModel
    test_accuracy: float
    losses: list[float]
    config: dict[str, Any] = field(default_factory=dict)


def _dataset_key(dataset: str) -> str:
    key = dataset.strip().lower().replace("_", "-")
    if key not in TRAIN_DATASETS:
        raise UnknownNameError(
            "dataset",
            dataset,
            TRAIN_DATASETS,
            hint="train-small trains on " + ", ".join(TRAIN_DATASETS) + ".",
        )
    return key


def load_training_data(dataset: str) -> tuple[Tensor, Tensor, tuple[str, ...]]:
    """A built-in dataset as (N, 1, 28, 28) float32 images in [0, 1] after smallnet's resize
    (one channel, since the datasets are grayscale), (N,) int64 labels and the class names.
    A missing dataset raises the loader's one-sentence error, which says how to get it."""
    from convscope.data.datasets import ArrayDataset, load_dataset

    key = _dataset_key(dataset)
    ds = load_dataset(key)
    if not isinstance(ds, ArrayDataset) or ds.labels is None or ds.classes is None:
        raise UserInputError(f"Dataset {key} is not a labelled in-memory dataset.")
    raw = np.asarray(ds.images)
    labels = torch.from_numpy(np.asarray(ds.labels, dtype=np.int64).copy())
    chunks = []
    for start in range(0, len(raw), _CHUNK):
        gray = torch.from_numpy(raw[start : start + _CHUNK].astype(np.float32) / ds.scale)
        gray = gray.clamp_(0.0, 1.0).unsqueeze(1)  # (n, 1, H, W)
        chunks.append(PREPROCESS.geometry(gray).contiguous())
    images = torch.cat(chunks) if chunks else torch.zeros(0, 1, 28, 28)
    return images, labels, tuple(ds.classes)


def split_indices(
    n: int, test_fraction: float, seed: int, limit: int | None = None
) -> tuple[Tensor, Tensor]:
    """The (train, test) index split that `train_small` uses: a seeded permutation of
    range(n), cut to the first `limit` entries when given, whose first
    round(len * test_fraction) entries are the test set."""
    if not 0.0 < test_fraction < 1.0:
        raise UserInputError(f"test_fraction must be between 0 and 1, got {test_fraction}.")
    if limit is not None and limit < 2:
        raise UserInputError(f"limit must be at least 2 images, got {limit}.")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    if limit is not None:
        perm = perm[:limit]
    n_test = min(max(1, round(len(perm) * test_fraction)), len(perm) - 1)
    return perm[n_test:], perm[:n_test]


def _shift(x: Tensor, shift: int, g: torch.Generator) -> Tensor:
    """Move each (1, H, W) image by its own random offset in [-shift, shift]², filling with 0."""
    if shift <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift))
    dy = torch.randint(0, 2 * shift + 1, (b,), generator=g)
    dx = torch.randint(0, 2 * shift + 1, (b,), generator=g)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # (B, H, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # (B, 1, W)
    return padded[torch.arange(b)[:, None, None], 0, rows, cols].unsqueeze(1)


def _to_input(gray: Tensor) -> Tensor:
    """(B, 1, 28, 28) in [0, 1] → normalized (B, 3, 28, 28) model input (gray replicated)."""
    return PREPROCESS.normalize(gray.expand(-1, 3, -1, -1))


@torch.no_grad()
def _accuracy(module: SmallNet, images: Tensor, labels: Tensor, batch_size: int = 512) -> float:
    module.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = module(_to_input(images[start : start + batch_size]))
        correct += int((logits.argmax(1) == labels[start : start + batch_size]).sum())
    return correct / max(1, len(images))


def train_small(
    dataset: str = "digits",
    *,
    epochs: int = 12,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    test_fraction: float = 0.2,
    limit: int | None = None,
    shift: int = 2,
    threads: int | None = 1,
    on_progress: ProgressCallback = no_progress,
) -> TrainResult:
    """Train a `SmallNet` from scratch with Adam (learning rate `lr`, cosine-annealed to zero)
    on `dataset` ("digits", "mnist5k" or "fashion-mnist"), holding out `test_fraction` of it
    (see `split_indices`; `limit` trains on a seeded random subset of that many images).

    `threads`: torch's CPU threads while training (restored afterwards; None leaves torch's
    setting). One thread is the default: for a net this small more threads barely help on an
    idle machine and slow training several-fold on a busy one, and a fixed count makes the
    result the same bit for bit on any machine with the same torch version.

    Emits one `Progress("train", epoch, epochs, unit="epochs")` event before the first epoch
    and one after each, with metrics `loss` (the epoch's mean training loss), `train_acc` and
    `test_acc`. Returns the model in eval mode; equal arguments give identical weights."""
    key = _dataset_key(dataset)
    if epochs < 1:
        raise UserInputError(f"epochs must be at least 1, got {epochs}.")
    if batch_size < 1:
        raise UserInputError(f"batch_size must be at least 1, got {batch_size}.")
    if not (lr > 0 and math.isfinite(lr)):
        raise UserInputError(f"lr must be a positive number, got {lr}.")
    if shift < 0:
        raise UserInputError(f"shift must be 0 or more pixels, got {shift}.")
    if threads is not None and threads < 1:
        raise UserInputError(f"threads must be at least 1, got {threads}.")
    split_indices(2, test_fraction, seed, limit)  # checks test_fraction and limit up front
    started = time.perf_counter()
    images, labels, classes = load_training_data(key)
    train_idx, test_idx = split_indices(len(images), test_fraction, seed, limit)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        used_threads = torch.get_num_threads()
        module, losses, test_acc = _fit(
            images[train_idx],
            labels[train_idx],
            images[test_idx],
            labels[test_idx],
            num_classes=len(classes),
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            shift=shift,
            on_progress=on_progress,
            message=f"{key}: {len(train_idx)} train / {len(test_idx)} test",
        )
    finally:
        torch.set_num_threads(old_threads)

    config: dict[str, Any] = {
        "dataset": key,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "test_fraction": test_fraction,
        "limit": limit,
        "shift": shift,
        "n_train": len(train_idx),
        "n_test": len(test_idx),
        "classes": list(classes),
        "train_seconds": round(time.perf_counter() - started, 2),
        "torch_threads": used_threads,
        "torch_version": torch.__version__,
    }
    source = WeightSource("user", f"trained by train_small on {key} (seed {seed})")
    return TrainResult(smallnet_model(module, source, classes), test_acc, losses, config)


def _fit(
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    *,
    num_classes: int,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    shift: int,
    on_progress: ProgressCallback,
    message: str,
) -> tuple[SmallNet, list[float], float]:
    """The training loop: (model in eval mode, mean loss per epoch, final test accuracy)."""
    n_train = len(x_train)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        module = SmallNet(num_classes=num_classes)
    g = torch.Generator().manual_seed(seed + 1)  # batch order and shifts
    steps_per_epoch = math.ceil(n_train / batch_size)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)

    on_progress(Progress("train", 0, epochs, unit="epochs", message=message))
    losses: list[float] = []
    test_acc = 0.0
    for epoch in range(1, epochs + 1):
        module.train()
        total_loss, correct = 0.0, 0
        order = torch.randperm(n_train, generator=g)
        for start in range(0, n_train, batch_size):
            idx = order[start : start + batch_size]
            logits = module(_to_input(_shift(x_train[idx], shift, g)))
            loss = F.cross_entropy(logits, y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            total_loss += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y_train[idx]).sum())
        losses.append(total_loss / n_train)
        test_acc = _accuracy(module, x_test, y_test)
        metrics = {"loss": losses[-1], "train_acc": correct / n_train, "test_acc": test_acc}
        on_progress(Progress("train", epoch, epochs, unit="epochs", metrics=metrics))
    module.eval()
    return module, losses, test_acc


def checkpoint_command(config: dict[str, Any], out: str | os.PathLike[str]) -> str:
    """The `convscope train-small` command line that remakes a checkpoint from its config,
    every setting spelled out (so it does not depend on the defaults of the day)."""
    parts = [
        "convscope",
        "train-small",
        "--dataset",
        str(config["dataset"]),
        "--out",
        os.fspath(out),
        "--epochs",
        str(config["epochs"]),
        "--batch-size",
        str(config["batch_size"]),
        "--lr",
        repr(float(config["lr"])),
        "--seed",
        str(config["seed"]),
        "--test-fraction",
        repr(float(config["test_fraction"])),
        "--shift",
        str(config["shift"]),
    ]
    if config.get("limit") is not None:
        parts += ["--limit", str(config["limit"])]
    if config.get("torch_threads") is not None:  # the float sums, and so the bits, depend on it
        parts += ["--threads", str(config["torch_threads"])]
    return shlex.join(parts)


def save_checkpoint(
    result: TrainResult, path: str | os.PathLike[str], *, command: str | None = None
) -> Path:
    """Write the trained weights to `path` as safetensors, atomically (a reader or an
    interruption never leaves half a file), with metadata recording how they were made: the
    training config, the test accuracy, the torch version, the date and the `convscope
    train-small` command (`command`, default: `checkpoint_command(result.config, path)`)."""
    out = Path(path).expanduser()
    if out.is_dir():
        raise UserInputError(f"Output path {str(out)!r} is a folder; give a file name.")
    cfg = result.config
    meta: dict[str, str] = {
        "format": FORMAT,
        "model": "smallnet",
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "test_accuracy": f"{result.test_accuracy:.6f}",
        "losses": json.dumps([round(v, 6) for v in result.losses]),
        "preprocess": json.dumps(
            {
                "resize": PREPROCESS.resize,
                "crop": PREPROCESS.crop,
                "interpolation": PREPROCESS.interpolation,
                "scale": PREPROCESS.scale,
                "mean": PREPROCESS.mean,
                "std": PREPROCESS.std,
            }
        ),
        "command": command if command is not None else checkpoint_command(cfg, path),
    }
    for k, v in cfg.items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    meta.setdefault("torch_version", torch.__version__)
    return save_tensors(result.model.module.state_dict(), out, meta)
