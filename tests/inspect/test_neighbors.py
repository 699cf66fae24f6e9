"""Exact k-nearest neighbours against brute force, ties, chunking, errors, pixel vectors."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from convscope.data.datasets import ArrayDataset
from convscope.errors import UserInputError
from convscope.inspect import neighbors as nb_mod
from convscope.inspect.neighbors import nearest, nearest_chunks, pixel_vectors, pixels_of


def brute_force(
    q: NDArray[np.float64], x: NDArray[np.float64], k: int, metric: str, decimals: int = 9
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Every distance computed pair by pair in float64; order by (distance, index)."""
    if metric == "l2":
        d = np.sqrt(((q[:, None, :] - x[None, :, :]) ** 2).sum(axis=2))
    else:
        qn = q / np.maximum(np.sqrt((q * q).sum(axis=1, keepdims=True)), 1e-300)
        xn = x / np.maximum(np.sqrt((x * x).sum(axis=1, keepdims=True)), 1e-300)
        d = 1.0 - (qn[:, None, :] * xn[None, :, :]).sum(axis=2)
    key = np.round(d, decimals)  # equal up to rounding = a tie
    ids = np.stack([np.lexsort((np.arange(len(x)), row))[:k] for row in key])
    return np.take_along_axis(d, ids, axis=1), ids


@st.composite
def problems(draw: st.DrawFn) -> tuple[NDArray[np.float64], NDArray[np.float64], int, int]:
    n = draw(st.integers(1, 40))
    d = draw(st.integers(1, 5))
    nq = draw(st.integers(1, 6))
    values = st.integers(-3, 3)  # few values: many exact ties and duplicates
    x = np.array(draw(st.lists(st.lists(values, min_size=d, max_size=d), min_size=n, max_size=n)))
    q = np.array(draw(st.lists(st.lists(values, min_size=d, max_size=d), min_size=nq, max_size=nq)))
    k = draw(st.integers(1, n))
    chunk = draw(st.integers(1, n + 3))
    return q.astype(np.float64), x.astype(np.float64), k, chunk


@settings(max_examples=int(os.environ.get("NN_EXAMPLES", "60")), deadline=None)
@given(problems(), st.sampled_from(["l2", "cosine"]))
def test_matches_brute_force_with_ties(
    problem: tuple[NDArray[np.float64], NDArray[np.float64], int, int], metric: str
) -> None:
    q, x, k, chunk = problem
    dist, ids = nearest(
        torch.from_numpy(q).float(), torch.from_numpy(x).float(), k, metric=metric, chunk=chunk
    )  # type: ignore[arg-type]
    ref_d, ref_i = brute_force(q, x, k, metric)
    assert ids.shape == (len(q), k) and dist.shape == (len(q), k)
    assert ids.tolist() == ref_i.tolist()
    np.testing.assert_allclose(dist.numpy(), ref_d, rtol=1e-6, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["l2", "cosine"]), st.integers(1, 30))
def test_random_floats(seed: int, metric: str, k: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(120, 7)).astype(np.float32)
    q = rng.normal(size=(5, 7)).astype(np.float32)
    dist, ids = nearest(q, x, k, metric=metric, chunk=50)  # type: ignore[arg-type]
    ref_d, ref_i = brute_force(q.astype(np.float64), x.astype(np.float64), k, metric)
    assert ids.tolist() == ref_i.tolist()
    np.testing.assert_allclose(dist.numpy(), ref_d, rtol=1e-5, atol=1e-6)


def test_duplicates_tie_to_the_lower_index() -> None:
    x = torch.zeros(300, 4)  # all equal: the fast path cannot order them, the refinement must
    x[:5] = 9.0
    dist, ids = nearest(torch.zeros(2, 4), x, 10, chunk=64)
    assert ids.tolist() == [list(range(5, 15))] * 2
    assert dist.abs().max() == 0
    _, ids = nearest(torch.ones(1, 4), x, 3, metric="cosine")  # zero vectors: distance 1
    assert ids.tolist() == [[0, 1, 2]]


def test_chunks_equal_whole() -> None:
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.normal(size=(500, 16)).astype(np.float32))
    q = x[:4] + 0.01
    whole = nearest(q, x, 6)
    pieces = nearest_chunks(q, (x[i : i + 77] for i in range(0, 500, 77)), 6)
    assert torch.equal(whole[1], pieces[1]) and torch.equal(whole[0], pieces[0])
    assert whole[1][:, 0].tolist() == [0, 1, 2, 3]


def test_errors() -> None:
    x = torch.zeros(5, 3)
    with pytest.raises(UserInputError, match="larger than the index"):
        nearest(torch.zeros(1, 3), x, 6)
    with pytest.raises(UserInputError, match="larger than the index"):
        nearest_chunks(torch.zeros(1, 3), [x[:2], x[2:]], 6)
    with pytest.raises(UserInputError, match="at least 1"):
        nearest(torch.zeros(1, 3), x, 0)
    with pytest.raises(UserInputError, match="dimensions"):
        nearest(torch.zeros(1, 4), x, 2)
    with pytest.raises(UserInputError, match="metric"):
        nearest(torch.zeros(1, 3), x, 2, metric="manhattan")  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match=r"\(n, D\)"):
        nearest(torch.zeros(3), x, 2)
    d, i = nearest(torch.zeros(0, 3), x, 2)
    assert d.shape == (0, 2) and i.shape == (0, 2)


def test_faiss_when_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("faiss", reason="faiss-cpu is an optional extra")
    monkeypatch.setattr(nb_mod, "FAISS_MIN_INDEX", 10)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    for metric in ("l2", "cosine"):
        exact = nearest(x[:3], x, 5, metric=metric)  # type: ignore[arg-type]
        fast = nearest(x[:3], x, 5, metric=metric, exact=False)  # type: ignore[arg-type]
        assert fast[1].tolist() == exact[1].tolist()
        torch.testing.assert_close(fast[0], exact[0], atol=1e-4, rtol=1e-4)


def test_pixel_vectors() -> None:
    images = np.arange(4 * 6 * 10, dtype=np.float64).reshape(4, 6, 10) % 7
    ds = ArrayDataset("p", images, None, None, scale=6.0)
    v = pixel_vectors(ds, [2, 0], size=4)
    assert v.shape == (2, 3 * 4 * 4)
    torch.testing.assert_close(v[1], pixels_of([ds[0].image], 4)[0])
    assert pixels_of(torch.rand(3, 3, 9, 9), 5).shape == (3, 75)
    with pytest.raises(UserInputError, match="size"):
        pixels_of([ds[0].image], 0)
