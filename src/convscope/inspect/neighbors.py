"""Nearest neighbours in feature space (and in pixel space, for comparison).

`nearest` is exact: candidates come from a chunked matrix product in float64, and the final
order is decided by distances recomputed directly for each (query, candidate) pair, with ties
going to the lower index. With `exact=False` and faiss installed, large indexes are searched
with faiss instead (float32; ties in any order).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor

from convscope.data.batches import iter_batches
from convscope.data.datasets import ImageDataset
from convscope.errors import UserInputError
from convscope.events import Progress, ProgressCallback, no_progress

__all__ = [
    "FAISS_MIN_INDEX",
    "Metric",
    "drop_self",
    "nearest",
    "nearest_chunks",
    "pixel_vectors",
    "pixels_of",
]

Metric = Literal["l2", "cosine"]
METRICS: tuple[str, ...] = ("l2", "cosine")

FAISS_MIN_INDEX = 50_000
"""With `exact=False`, indexes with more rows than this are searched with faiss when installed."""

_EPS64 = float(np.finfo(np.float64).eps)
_PAD = 8  # extra candidates per query beyond k, so near-ties are re-ranked exactly


def _as_matrix(x: Tensor | NDArray[Any], what: str) -> Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)
    if t.dim() != 2:
        raise UserInputError(f"{what} must have shape (n, D), got {tuple(t.shape)}.")
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64, torch.uint8)):
        raise UserInputError(f"{what} must hold numbers, got dtype {t.dtype}.")
    return t.detach().cpu()


def _exact(q: Tensor, x: Tensor, metric: Metric) -> Tensor:
    """Pairwise distances computed directly, with the same arithmetic for every pair wherever
    it sits: q (Q, D) and x (Q, M, D) float64 → (Q, M).

    l2 gives squared distances. Cosine gives 1 − sign(q·x)·sqrt((q·x)² / (‖q‖²‖x‖²)): with
    exact dot products (e.g. small integers) equal cosines give equal floats even for vectors
    of different lengths, as one correctly rounded division of equal ratios. A zero vector is
    at distance 1."""
    if metric == "l2":
        return ((q.unsqueeze(1) - x) ** 2).sum(dim=2)  # squared
    dot = (q.unsqueeze(1) * x).sum(dim=2)  # (Q, M)
    norms = (q * q).sum(dim=1, keepdim=True) * (x * x).sum(dim=2)  # (Q, M)
    cos2 = torch.where(norms > 0, dot * dot / norms.clamp_min(1e-300), torch.zeros_like(dot))
    return 1.0 - torch.sign(dot) * cos2.clamp(0.0, 1.0).sqrt()


def _normalize(x: Tensor) -> Tensor:
    return F.normalize(x, dim=1, eps=1e-300)  # zero rows stay zero


def nearest(
    queries: Tensor | NDArray[Any],
    index: Tensor | NDArray[Any],
    k: int,
    *,
    metric: Metric = "l2",
    chunk: int = 8192,
    exact: bool = True,
) -> tuple[Tensor, Tensor]:
    """The `k` nearest rows of `index` (N, D) for each query (Q, D).

    Returns (distances (Q, k) float32, ids (Q, k) int64), each row sorted by distance, ties
    going to the lower id. `metric`: "l2" (Euclidean distance) or "cosine" (1 − cosine
    similarity; a zero vector is at distance 1 from everything). The index is processed
    `chunk` rows at a time, so memory stays bounded. `exact=False` allows faiss (float32, ties
    in any order) for indexes larger than `FAISS_MIN_INDEX` when it is installed.
    """
    if metric not in METRICS:
        raise UserInputError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}.")
    q = _as_matrix(queries, "queries")
    x = _as_matrix(index, "index")
    n, d = x.shape
    if q.shape[1] != d:
        raise UserInputError(
            f"queries have {q.shape[1]} dimensions but the index has {d}; they must match."
        )
    if k < 1:
        raise UserInputError(f"k must be at least 1, got {k}.")
    if k > n:
        raise UserInputError(f"k={k} is larger than the index, which has {n} items.")
    if chunk < 1:
        raise UserInputError(f"chunk must be at least 1, got {chunk}.")
    if q.shape[0] == 0:
        return torch.empty(0, k), torch.empty(0, k, dtype=torch.int64)
    if not exact and n > FAISS_MIN_INDEX:
        found = _faiss_search(q, x, k, metric)
        if found is not None:
            return found
    return nearest_chunks(q, (x[lo : lo + chunk] for lo in range(0, n, chunk)), k, metric=metric)


def nearest_chunks(
    queries: Tensor | NDArray[Any],
    chunks: Iterable[Tensor | NDArray[Any]],
    k: int,
    *,
    metric: Metric = "l2",
) -> tuple[Tensor, Tensor]:
    """`nearest` over an index that arrives in pieces (each (c, D)), e.g. computed on the fly:
    ids count rows across all pieces. Exact, with the same tie rule; raises when the pieces
    hold fewer than `k` rows in all."""
    if metric not in METRICS:
        raise UserInputError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}.")
    if k < 1:
        raise UserInputError(f"k must be at least 1, got {k}.")
    q = _as_matrix(queries, "queries")
    qd = q.double()  # (Q, D)
    best_d = torch.empty(q.shape[0], 0, dtype=torch.float64)
    best_i = torch.empty(q.shape[0], 0, dtype=torch.int64)
    lo = 0
    for piece in chunks:
        xc = _as_matrix(piece, "index").double()  # (C, D)
        if xc.shape[1] != q.shape[1]:
            raise UserInputError(
                f"queries have {q.shape[1]} dimensions but the index has {xc.shape[1]}; "
                "they must match."
            )
        if xc.shape[0] == 0:
            continue
        dist, ids = _chunk_topk(qd, xc, k, metric)  # (Q, k') each, exact, ids within piece
        best_d, best_i = _merge(best_d, best_i, dist, ids + lo, k)
        lo += xc.shape[0]
    if lo < k:
        raise UserInputError(f"k={k} is larger than the index, which has {lo} items.")
    if metric == "l2":
        best_d = best_d.clamp_min(0).sqrt()
    return best_d.float(), best_i


def _merge(d1: Tensor, i1: Tensor, d2: Tensor, i2: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Merge two exact top lists (Q, a), (Q, b) into the top `k` by (distance, id)."""
    d = torch.cat([d1, d2], dim=1)
    i = torch.cat([i1, i2], dim=1)
    order = _lexsort(d, i)[:, :k]
    return d.gather(1, order), i.gather(1, order)


def _lexsort(d: Tensor, i: Tensor) -> Tensor:
    """Per row, the permutation sorting by distance, then by id (both (Q, M))."""
    by_id = i.argsort(dim=1, stable=True)
    by_dist = d.gather(1, by_id).argsort(dim=1, stable=True)
    return by_id.gather(1, by_dist)


def _chunk_topk(q: Tensor, x: Tensor, k: int, metric: Metric) -> tuple[Tensor, Tensor]:
    """Exact top-min(k, C) of one index chunk x (C, D) for queries q (Q, D), float64.

    Candidates are the top k + _PAD by the fast formula (‖q‖² − 2q·x + ‖x‖², or 1 − q·x);
    those are re-ranked by `_exact`. If a query's worst candidate is within the fast formula's
    error bound of its k-th exact distance, points outside the candidates could tie or beat it,
    so that query is redone exactly over the whole chunk.
    """
    c = x.shape[0]
    kk = min(k, c)
    m = min(c, kk + _PAD)
    out_d = torch.empty(q.shape[0], kk, dtype=torch.float64)
    out_i = torch.empty(q.shape[0], kk, dtype=torch.int64)
    d = x.shape[1]
    if metric == "l2":
        xn = (x * x).sum(dim=1)  # (C,)
        xmax = float(xn.max())
    else:
        xu = _normalize(x)  # (C, D) unit rows for the fast formula
    # Keep the (Qb, m, D) candidate block around 32 MB.
    qb = max(1, min(q.shape[0], 4_000_000 // max(1, m * d), 4_000_000 // max(1, c)))
    for lo in range(0, q.shape[0], qb):
        qq = q[lo : lo + qb]  # (b, D)
        if metric == "l2":
            qn = (qq * qq).sum(dim=1, keepdim=True)  # (b, 1)
            approx = qn - 2.0 * (qq @ x.T) + xn  # (b, C)
            bound = 8.0 * (d + 2) * _EPS64 * (qn + xmax)  # (b, 1)
        else:
            approx = 1.0 - _normalize(qq) @ xu.T  # (b, C)
            bound = torch.full((qq.shape[0], 1), 16.0 * (d + 2) * _EPS64, dtype=torch.float64)
        cand_d, cand = approx.topk(m, dim=1, largest=False, sorted=True)  # (b, m)
        ex = _exact(qq, x[cand], metric)  # (b, m)
        order = _lexsort(ex, cand)[:, :kk]
        top_d, top_i = ex.gather(1, order), cand.gather(1, order)
        if m < c:
            # Unsafe when a point outside the candidates may be as near as the k-th.
            unsafe = (cand_d[:, -1:] - bound <= top_d[:, -1:] + bound).squeeze(1)
            for r in unsafe.nonzero().flatten().tolist():
                full = _exact(qq[r : r + 1], x.unsqueeze(0), metric)  # (1, C)
                ids = torch.arange(c).unsqueeze(0)
                o = _lexsort(full, ids)[:, :kk]
                top_d[r], top_i[r] = full.gather(1, o)[0], o[0]
        out_d[lo : lo + qb], out_i[lo : lo + qb] = top_d, top_i
    return out_d, out_i


def _faiss_search(q: Tensor, x: Tensor, k: int, metric: Metric) -> tuple[Tensor, Tensor] | None:
    try:
        import faiss
    except ImportError:
        return None
    xs = np.ascontiguousarray(x.float().numpy())
    qs = np.ascontiguousarray(q.float().numpy())
    idx: Any
    if metric == "cosine":
        faiss.normalize_L2(xs)
        faiss.normalize_L2(qs)
        idx = faiss.IndexFlatIP(xs.shape[1])
    else:
        idx = faiss.IndexFlatL2(xs.shape[1])
    idx.add(xs)
    dist, ids = idx.search(qs, k)
    dt = torch.from_numpy(np.asarray(dist, dtype=np.float32))
    dt = 1.0 - dt if metric == "cosine" else dt.clamp_min(0).sqrt()
    return dt, torch.from_numpy(np.asarray(ids, dtype=np.int64))


def pixels_of(images: Sequence[Tensor] | Tensor, size: int = 32) -> Tensor:
    """Raw-pixel vectors (B, 3·size·size) float32: each (3, H, W) image's short side resized to
    `size`, center-cropped to a square."""
    from convscope.models.base import Preprocess

    if size < 1:
        raise UserInputError(f"size must be at least 1, got {size}.")
    geo = Preprocess(resize=size, crop=size, interpolation="bilinear")
    seq = list(images.unbind(0)) if isinstance(images, Tensor) and images.dim() == 4 else images
    if isinstance(seq, Tensor):
        seq = [seq]
    vecs = [geo.geometry(im.float()).reshape(-1) for im in seq]  # each (3·size·size,)
    if not vecs:
        return torch.empty(0, 3 * size * size)
    return torch.stack(vecs).float()


def pixel_vectors(
    dataset: ImageDataset,
    ids: Sequence[int],
    size: int = 32,
    *,
    on_progress: ProgressCallback = no_progress,
) -> Tensor:
    """Raw-pixel vectors (len(ids), 3·size·size) of dataset images, for the pixel-space
    neighbours that feature-space neighbours are compared against. Decoding runs in the
    background; an unreadable image raises (these ids were readable when features were made).
    """
    from convscope.models.base import Preprocess

    if size < 1:
        raise UserInputError(f"size must be at least 1, got {size}.")
    geo = Preprocess(resize=size, crop=size, interpolation="bilinear")
    out = torch.empty(len(ids), 3 * size * size)
    at = 0
    for batch in iter_batches(dataset, geo.geometry, 256, indices=list(ids)):
        if batch.skipped:
            s = batch.skipped[0]
            raise UserInputError(f"Cannot read {s.ident} for pixel neighbours: {s.reason}")
        b = len(batch.indices)
        out[at : at + b] = batch.images.reshape(b, -1)
        at += b
        on_progress(Progress("pixels", at, len(ids), "images"))
    return out


def drop_self(
    distances: Tensor, ids: Tensor, row: int | None, k: int
) -> tuple[list[float], list[int]]:
    """One query's (k + 1,) neighbour distances and ids → the first `k`, without the query's
    own `row` of the index (when the query is a row of it)."""
    pairs = [(float(a), int(b)) for a, b in zip(distances.tolist(), ids.tolist(), strict=True)]
    if row is not None:
        pairs = [p for p in pairs if p[1] != row]
    pairs = pairs[:k]
    return [p[0] for p in pairs], [p[1] for p in pairs]
