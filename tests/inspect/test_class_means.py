"""Per-class means against a loop written out, unlabelled rows, empty classes and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from convscope.errors import UserInputError
from convscope.inspect.class_means import class_means


def reference(values: list[list[float]], labels: list[int], k: int) -> list[list[float]]:
    """Each class's mean, one row at a time (NaN for a class without rows)."""
    out = []
    for cls in range(k):
        rows = [v for v, lab in zip(values, labels, strict=True) if lab == cls]
        out.append(
            [sum(col) / len(rows) for col in zip(*rows, strict=True)]
            if rows
            else [math.nan] * len(values[0])
        )
    return out


def test_known_means_counts_and_names() -> None:
    values = torch.tensor([[1.0, 10.0], [3.0, 20.0], [5.0, -6.0], [100.0, 100.0]])
    cm = class_means(values, torch.tensor([0, 0, 1, -1]), classes=["a", "b", "c"])
    assert cm.classes == ["a", "b", "c"] and cm.counts.tolist() == [2, 1, 0]
    assert cm.means[:2].tolist() == [[2.0, 15.0], [5.0, -6.0]]  # the unlabelled row is left out
    assert torch.isnan(cm.means[2]).all()  # no image of "c"
    assert cm.column(1)[:2] == [("a", 2, 15.0), ("b", 1, -6.0)]


def test_matches_the_loop_on_random_data() -> None:
    g = np.random.default_rng(0)
    values = g.normal(size=(60, 5)).astype(np.float32)
    labels = g.integers(-1, 4, size=60)
    cm = class_means(values, labels)  # numpy in, classes named by number
    want = reference(values.astype(np.float64).tolist(), labels.tolist(), 4)
    assert cm.classes == ["0", "1", "2", "3"]
    assert np.allclose(cm.means.numpy(), np.array(want), equal_nan=True)
    order = g.permutation(60)  # the order of the images does not matter
    again = class_means(values[order], labels[order])
    assert torch.allclose(again.means, cm.means, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("values", "labels", "classes", "message"),
    [
        (torch.zeros(3), [0, 1, 2], None, "shape"),
        (torch.zeros(3, 2), [0, 1], None, "labels must have shape"),
        (torch.zeros(2, 2), [-1, -1], None, "none of the images has a label"),
        (torch.zeros(2, 2), [0, 5], ["a", "b"], "outside the 2 classes"),
    ],
)
def test_bad_inputs_are_one_sentence(
    values: torch.Tensor, labels: list[int], classes: list[str] | None, message: str
) -> None:
    with pytest.raises(UserInputError, match=message):
        class_means(values, labels, classes=classes)
    with pytest.raises(UserInputError, match="out of range"):
        class_means(torch.ones(2, 2), [0, 1]).column(2)
