"""Batches from a dataset: order, skipped files, fixed blocks."""

from __future__ import annotations

import torch

from convscope.data.batches import iter_batches
from convscope.data.datasets import Item
from convscope.errors import UserInputError


class Flaky:
    """Item i is an image filled with i; items in `bad` cannot be read."""

    name = "flaky"
    classes = None

    def __init__(self, n: int, bad: set[int]) -> None:
        self.n, self.bad = n, bad

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Item:
        if i in self.bad:
            raise UserInputError(f"item {i} is broken.")
        return Item(torch.full((3, 2, 2), float(i)), None, str(i))

    def ident(self, i: int) -> str:
        return str(i)


def test_fills_batches_with_readable_images() -> None:
    batches = list(iter_batches(Flaky(7, {1, 2}), lambda x: x, 2))
    assert [b.indices for b in batches] == [[0, 3], [4, 5], [6]]
    assert [s.index for b in batches for s in b.skipped] == [1, 2]
    assert batches[-1].position == 7
    assert torch.equal(batches[0].images[:, 0, 0, 0], torch.tensor([0.0, 3.0]))


def test_fixed_blocks_do_not_shift_after_a_skip() -> None:
    batches = list(iter_batches(Flaky(7, {1, 2, 3}), lambda x: x, 2, fixed_blocks=True))
    assert [b.indices for b in batches] == [[0], [], [4, 5], [6]]
    assert [b.position for b in batches] == [2, 4, 6, 7]


def test_indices_subset_and_errors_propagate() -> None:
    got = list(iter_batches(Flaky(9, set()), lambda x: x, 3, indices=[8, 2, 5]))
    assert got[0].indices == [8, 2, 5]

    def boom(_x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("transform failed")

    try:
        list(iter_batches(Flaky(3, set()), boom, 2))
    except RuntimeError as exc:
        assert "transform failed" in str(exc)
    else:
        raise AssertionError("the error was swallowed")
