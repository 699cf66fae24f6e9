"""How strongly each class of a dataset drives each channel: the mean of per-image values
(e.g. a channel's spatially averaged activation, the `pool="avg"` features of
`extract_features`) over the images of each class.

    ff = extract_features(model, "digits", "conv2", out=Path("f.safetensors"))
    cm = class_means(ff.features, ff.labels, classes=ff.classes)
    cm.means[:, 7]   # (K,) channel 7's mean activation on each class
    cm.counts        # (K,) images per class

Sums are accumulated in float64, so the means do not depend on the order of the images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from convscope.errors import UserInputError

__all__ = ["ClassMeans", "class_means"]


@dataclass(frozen=True)
class ClassMeans:
    """Per-class means of per-image values. A class without images has count 0 and NaN
    means."""

    means: Tensor  # (K, D) float64
    counts: Tensor  # (K,) int64
    classes: list[str]  # K names

    def __len__(self) -> int:
        return int(self.counts.shape[0])

    def column(self, d: int) -> list[tuple[str, int, float]]:
        """(class name, image count, mean) of value `d` (a channel) for every class."""
        if not 0 <= d < int(self.means.shape[1]):
            raise UserInputError(
                f"column {d} is out of range 0..{int(self.means.shape[1]) - 1} of the class means."
            )
        return [
            (name, int(n), float(m))
            for name, n, m in zip(self.classes, self.counts, self.means[:, d], strict=True)
        ]


def _as_tensor(x: Tensor | NDArray[Any], what: str) -> Tensor:
    t = x.detach().cpu() if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    if what == "values" and not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise UserInputError(f"values must hold numbers, got dtype {t.dtype}.")
    return t


def class_means(
    values: Tensor | NDArray[Any],
    labels: Tensor | NDArray[Any] | Sequence[int],
    *,
    classes: Sequence[str] | None = None,
) -> ClassMeans:
    """Values (N, D) and labels (N,) (-1 = no label, left out) → the mean value of each class.

    `classes` names the classes (label k is `classes[k]`); without it they are named by
    number, as many as the largest label + 1. Raises a one-sentence error when no image has a
    label, or a label is outside `classes`."""
    v = _as_tensor(values, "values")
    if v.dim() != 2:
        raise UserInputError(f"values must have shape (N, D), got {tuple(v.shape)}.")
    lab = torch.as_tensor(
        np.asarray(labels) if not isinstance(labels, Tensor) else labels.detach().cpu()
    )
    if lab.dim() != 1 or lab.shape[0] != v.shape[0]:
        raise UserInputError(
            f"labels must have shape ({v.shape[0]},) to match the values, got {tuple(lab.shape)}."
        )
    lab = lab.to(torch.int64)
    known = lab >= 0
    if not bool(known.any()):
        raise UserInputError("none of the images has a label, so there are no class means.")
    top = int(lab.max())
    k = len(classes) if classes is not None else top + 1
    if top >= k:
        raise UserInputError(f"label {top} is outside the {k} classes given.")
    rows = v[known].double()  # (M, D)
    ids = lab[known]  # (M,)
    sums = torch.zeros(k, v.shape[1], dtype=torch.float64).index_add_(0, ids, rows)  # (K, D)
    counts = torch.bincount(ids, minlength=k)  # (K,)
    means = sums / counts.unsqueeze(1).clamp_min(1)
    means[counts == 0] = float("nan")
    names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(k)]
    return ClassMeans(means, counts, names)
