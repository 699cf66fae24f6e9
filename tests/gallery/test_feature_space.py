"""The feature-space section's pure helpers: the query rule and the accuracy it reports."""

from __future__ import annotations

import torch

from convscope.gallery.feature_space import _compare, first_of_each, loo_accuracy


def test_first_of_each_takes_each_labels_first_item_in_order() -> None:
    assert first_of_each([0, 0, 1, 1, 1, 2]) == [0, 2, 5]
    assert first_of_each([2, 0, 2, 1, 0]) == [0, 1, 3]
    assert first_of_each([]) == []


def test_loo_accuracy_counts_the_held_out_vote_in_either_metric() -> None:
    # Two far-apart clusters; the first holds one point of the other label.
    x = torch.tensor([[0, 0], [1, 0], [0, 1.5], [10, 10], [11, 10], [10, 11.5]])
    assert loo_accuracy(x, [0, 0, 0, 1, 1, 1], k=2) == 1.0
    # Point 2's two nearest are both label 0; points 0 and 1 split 1–1, the nearer (0) wins.
    assert loo_accuracy(x, [0, 0, 1, 1, 1, 1], k=2) == 5 / 6
    # Cosine ignores length: [1, 0] and [10, 0] are the same direction, [0, 1] is not.
    y = torch.tensor([[1.0, 0.0], [10.0, 0.0], [0.0, 1.0], [0.0, 9.0]])
    labels = [0, 0, 1, 1]
    assert loo_accuracy(y, labels, k=1, metric="cosine") == 1.0
    assert loo_accuracy(y, labels, k=1, metric="l2") == 0.5  # [1, 0] and [0, 1] are near


def test_compare_words() -> None:
    assert _compare(0.9, 0.5) == "higher than"
    assert _compare(0.5, 0.9) == "lower than"
    assert _compare(0.5, 0.5) == "the same as"
