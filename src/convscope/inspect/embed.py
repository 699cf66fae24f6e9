"""2-D maps of feature space: PCA, t-SNE (openTSNE) and UMAP; snapping a map to a grid; and
how well a map keeps classes apart (leave-one-out k-NN accuracy in 2-D).

t-SNE is made fast without cutting iterations: PCA to 50 dimensions first; exact nearest
neighbours by chunked matrix products up to 30,000 points and Annoy's approximate ones above;
FFT-accelerated gradients with 2 interpolation points for large maps (Barnes-Hut for small
ones, where it is faster); the idle cores only (busy-waiting thread pools are slow on a loaded
machine); and a PCA initialization. It handles 100k points.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from torch import Tensor

from convscope.errors import UserInputError
from convscope.events import Progress, ProgressCallback, no_progress

__all__ = [
    "EARLY_EXAGGERATION_ITER",
    "FFT_MIN_POINTS",
    "METHODS",
    "N_ITER",
    "UMAP_INSTALL",
    "Method",
    "embed_2d",
    "grid_shape",
    "grid_snap",
    "idle_cores",
    "knn_accuracy_2d",
]

Method = Literal["pca", "tsne", "umap"]
METHODS: tuple[str, ...] = ("pca", "tsne", "umap")
EARLY_EXAGGERATION_ITER = 250
N_ITER = 500
PCA_DIMS = 50
FFT_MIN_POINTS = 10_000  # FFT gradients from here on; Barnes-Hut is faster below
FFT_INTERPOLATION_POINTS = 2  # openTSNE's default is 3; 2 is ~2x faster, as trustworthy
FFT_INTS_IN_INTERVAL = 2  # openTSNE's default is 1; coarser grid once the map spreads out
EXACT_KNN_MAX = 30_000  # exact neighbours (chunked matrix products) up to here, Annoy above
UMAP_INSTALL = "pip install 'convscope[fast]'  (or: pip install umap-learn)"
_LSA_MAX = 1000  # grid_snap solves the assignment exactly up to this many points
_LSA_LEAF = 128  # above, it splits the grid and solves pieces of this size exactly


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def idle_cores() -> int:
    """The cores not busy with other work: all of them minus the 1-minute load average, at
    least one. t-SNE's thread pools wait actively, so on a busy machine more threads than idle
    cores make it several times slower, not faster."""
    cores = _cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - not on Unix
        return cores
    return max(1, min(cores, cores - math.floor(load)))


def _as_array(features: Tensor | NDArray[Any], what: str = "features") -> NDArray[np.float32]:
    if isinstance(features, Tensor):
        arr = features.detach().cpu().float().numpy()
    else:
        arr = np.asarray(features, dtype=np.float32)
    if arr.ndim != 2:
        raise UserInputError(f"{what} must have shape (N, D), got {tuple(arr.shape)}.")
    if not np.isfinite(arr).all():
        raise UserInputError(f"{what} contain NaN or infinite values.")
    return arr


def _pca(x: NDArray[np.float32], dims: int, seed: int) -> NDArray[np.float32]:
    """(N, D) → (N, dims) principal components (signs fixed as scikit-learn fixes them)."""
    from sklearn.decomposition import PCA

    dims = min(dims, x.shape[0], x.shape[1])
    solver = "full" if min(x.shape) <= 2 * dims or x.shape[0] <= 500 else "randomized"
    out = PCA(n_components=dims, svd_solver=solver, random_state=seed).fit_transform(x)
    return np.asarray(out, dtype=np.float32)


def embed_2d(
    features: Tensor | NDArray[Any],
    *,
    method: Method = "tsne",
    perplexity: float = 30.0,
    seed: int = 0,
    n_jobs: int | None = None,
    on_progress: ProgressCallback = no_progress,
) -> NDArray[np.float32]:
    """Features (N, D) → 2-D positions (N, 2) float32.

    `method`: "pca" (the top two principal components), "tsne" (openTSNE: PCA to 50
    dimensions; exact neighbours by matrix products up to 30,000 points, Annoy's approximate
    ones above; FFT-interpolated gradients (2 interpolation points) from 10,000 points and
    Barnes-Hut below, where it is faster; PCA initialization; 250 early-exaggeration + 500
    iterations), or "umap" (needs umap-learn: the `fast` extra).
    `perplexity` is lowered to (N − 1) / 3 for small N. `n_jobs`: threads (default: the
    idle cores, see `idle_cores`). Progress events: task "embed", unit "iterations" for t-SNE.
    """
    if method not in METHODS:
        raise UserInputError(f"method must be one of {', '.join(METHODS)}, not {method!r}.")
    x = _as_array(features)  # (N, D)
    n = x.shape[0]
    if n < 2:
        raise UserInputError(f"a 2-D map needs at least 2 points, got {n}.")
    if perplexity <= 0:
        raise UserInputError(f"perplexity must be positive, got {perplexity}.")
    jobs = idle_cores() if n_jobs is None or n_jobs < 1 else n_jobs
    if method == "pca":
        xy = _pca(x, 2, seed)
        if xy.shape[1] < 2:  # one feature dimension: put everything on a line
            xy = np.concatenate([xy, np.zeros((n, 2 - xy.shape[1]), np.float32)], axis=1)
        on_progress(Progress("embed", 1, 1, "steps", "pca"))
        return xy
    if method == "umap":
        return _umap(x, seed=seed, on_progress=on_progress)
    return _tsne(x, perplexity=perplexity, seed=seed, n_jobs=jobs, on_progress=on_progress)


def _tsne(
    x: NDArray[np.float32],
    *,
    perplexity: float,
    seed: int,
    n_jobs: int,
    on_progress: ProgressCallback,
) -> NDArray[np.float32]:
    try:
        from openTSNE import TSNE
    except ImportError:  # pragma: no cover - a core dependency
        raise UserInputError(
            "t-SNE needs openTSNE; install it with `pip install openTSNE`."
        ) from None
    n = x.shape[0]
    if n < 4:
        raise UserInputError(f"t-SNE needs at least 4 points, got {n}; use method 'pca'.")
    perp = min(perplexity, (n - 1) / 3.0)
    total = EARLY_EXAGGERATION_ITER + N_ITER
    on_progress(Progress("embed", 0, total, "iterations", "t-SNE: PCA and neighbours"))
    if x.shape[1] > PCA_DIMS:
        x = _pca(x, PCA_DIMS, seed)  # (N, 50)
    if float(np.ptp(x, axis=0).max()) == 0.0:
        raise UserInputError("all feature vectors are identical, so t-SNE cannot spread them.")
    every = 50
    done = [0]

    def callback(_iteration: int, error: float, _embedding: Any) -> bool:
        done[0] = min(total, done[0] + every)
        on_progress(Progress("embed", done[0], total, "iterations", "t-SNE", {"KL": error}))
        return False

    fft = n >= FFT_MIN_POINTS
    tsne = TSNE(
        n_components=2,
        perplexity=perp,
        early_exaggeration_iter=EARLY_EXAGGERATION_ITER,
        n_iter=N_ITER,
        initialization="pca",
        metric="euclidean",
        neighbors="annoy",  # used above EXACT_KNN_MAX points; exact neighbours below
        negative_gradient_method="fft" if fft else "bh",
        n_interpolation_points=FFT_INTERPOLATION_POINTS,
        ints_in_interval=FFT_INTS_IN_INTERVAL,
        n_jobs=n_jobs,
        random_state=seed,
        callbacks=callback,
        callbacks_every_iters=every,
        verbose=False,
    )
    x64 = np.ascontiguousarray(x, dtype=np.float64)
    if n <= EXACT_KNN_MAX:
        from openTSNE.affinity import MultiscaleMixture
        from openTSNE.nearest_neighbors import PrecomputedNeighbors

        ids, dists = _exact_knn(x, min(n - 1, int(3 * perp)), threads=n_jobs)
        affinities = MultiscaleMixture(
            perplexities=[perp],
            knn_index=PrecomputedNeighbors(ids, dists),
            symmetrize=True,
            n_jobs=n_jobs,
            random_state=seed,
        )
        emb = tsne.fit(x64, affinities=affinities)
    else:
        emb = tsne.fit(x64)
    on_progress(Progress("embed", total, total, "iterations", "t-SNE"))
    return np.asarray(emb, dtype=np.float32)


def _exact_knn(
    x: NDArray[np.float32], k: int, *, threads: int
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """The `k` nearest other points of every point: ids (N, k) and Euclidean distances (N, k),
    by chunked float32 matrix products (faster than Annoy up to a few 10,000 points in 50-d)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        p = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))  # (N, d)
        n = p.shape[0]
        sq = (p * p).sum(dim=1)  # (N,)
        ids = torch.empty(n, k, dtype=torch.int64)
        dists = torch.empty(n, k, dtype=torch.float32)
        step = max(1, 8_000_000 // max(1, n))
        for lo in range(0, n, step):
            q = p[lo : lo + step]  # (b, d)
            d2 = sq[lo : lo + step, None] - 2.0 * (q @ p.T) + sq  # (b, N)
            rows = torch.arange(q.shape[0])
            d2[rows, rows + lo] = float("inf")  # not its own neighbour
            v, i = d2.topk(k, dim=1, largest=False, sorted=True)
            ids[lo : lo + step] = i
            dists[lo : lo + step] = v.clamp_min(0).sqrt()
    finally:
        torch.set_num_threads(old)
    return ids.numpy(), dists.numpy().astype(np.float64)


def _umap(
    x: NDArray[np.float32], *, seed: int, on_progress: ProgressCallback
) -> NDArray[np.float32]:
    try:
        import umap
    except ImportError:
        raise UserInputError(
            f"UMAP needs umap-learn, which is not installed; {UMAP_INSTALL}."
        ) from None
    n = x.shape[0]
    if n < 4:
        raise UserInputError(f"UMAP needs at least 4 points, got {n}; use method 'pca'.")
    on_progress(Progress("embed", 0, 1, "steps", "UMAP"))
    if x.shape[1] > PCA_DIMS:
        x = _pca(x, PCA_DIMS, seed)
    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed)
    with warnings.catch_warnings():  # "n_jobs overridden by setting random_state": intended
        warnings.filterwarnings("ignore", message=".*n_jobs value.*", category=UserWarning)
        xy = np.asarray(reducer.fit_transform(x), dtype=np.float32)
    on_progress(Progress("embed", 1, 1, "steps", "UMAP"))
    return xy


# ---- grids -----------------------------------------------------------------------------------


def grid_shape(xy: NDArray[Any], n: int | None = None) -> tuple[int, int]:
    """(columns, rows) of the smallest grid with ≥ n cells whose aspect follows the map's."""
    pts = np.asarray(xy, dtype=np.float64)
    n = len(pts) if n is None else n
    span = np.ptp(pts, axis=0) if len(pts) else np.ones(2)
    aspect = float(span[0] / span[1]) if span[1] > 0 and span[0] > 0 else 1.0
    aspect = min(max(aspect, 0.25), 4.0)
    cols = max(1, math.ceil(math.sqrt(n * aspect)))
    rows = max(1, math.ceil(n / cols))
    return cols, rows


def _to_grid(pts: NDArray[np.float64], cols: int, rows: int) -> NDArray[np.float64]:
    """Map the bounding box of `pts` onto [0, cols] × [0, rows]."""
    lo = pts.min(axis=0)
    span = np.ptp(pts, axis=0)
    span[span == 0] = 1.0
    unit = (pts - lo) / span  # (N, 2) in [0, 1]
    return np.asarray(unit * np.array([cols, rows]) * (1 - 1e-9), dtype=np.float64)


def grid_snap(
    xy: NDArray[Any] | Tensor, *, shape: tuple[int, int] | None = None
) -> NDArray[np.int64]:
    """Move each point of a 2-D map (N, 2) to its own grid cell: (N, 2) int (column, row).

    `shape` = (columns, rows), at least N cells; by default the smallest grid shaped like the
    map. No two points share a cell. Up to 1000 points the total squared displacement is
    minimized exactly (a linear assignment, scipy); above, the grid is split recursively in
    halves that take the points on their side as far as they have room (in the spirit of
    RasterFairy), and pieces of at most 128 points are solved exactly: O(N log² N), within
    about 10% of the optimal displacement.
    """
    pts = _as_array(xy, "positions").astype(np.float64)
    if pts.shape[1] != 2:
        raise UserInputError(f"positions must have shape (N, 2), got {tuple(pts.shape)}.")
    n = len(pts)
    cols, rows = grid_shape(pts) if shape is None else shape
    if cols < 1 or rows < 1:
        raise UserInputError(f"grid shape must be positive, got {(cols, rows)}.")
    if cols * rows < n:
        raise UserInputError(
            f"a {cols}×{rows} grid has {cols * rows} cells, fewer than {n} points."
        )
    if n == 0:
        return np.zeros((0, 2), dtype=np.int64)
    g = _to_grid(pts, cols, rows)  # (N, 2) in grid units
    if n <= _LSA_MAX:
        return _snap_assignment(g, cols, rows)
    return _snap_bisect(g, cols, rows, leaf=_LSA_LEAF)


def _snap_assignment(g: NDArray[np.float64], cols: int, rows: int) -> NDArray[np.int64]:
    from scipy.optimize import linear_sum_assignment

    cx, cy = np.meshgrid(np.arange(cols) + 0.5, np.arange(rows) + 0.5, indexing="xy")
    centers = np.stack([cx.ravel(), cy.ravel()], axis=1)  # (M, 2)
    cost = ((g[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2)  # (N, M)
    point, cell = linear_sum_assignment(cost)
    out = np.empty((len(g), 2), dtype=np.int64)
    out[point, 0] = cell % cols
    out[point, 1] = cell // cols
    return out


def _snap_bisect(
    g: NDArray[np.float64], cols: int, rows: int, *, leaf: int = 0
) -> NDArray[np.int64]:
    """Split the grid rectangle in two along its longer side; the points before the cut go to
    that half, as far as it has room, the rest to the other; recurse. Rectangles with at most
    `leaf` points are solved exactly by linear assignment."""
    out = np.empty((len(g), 2), dtype=np.int64)
    stack: list[tuple[NDArray[np.int64], int, int, int, int]] = [
        (np.arange(len(g)), 0, 0, cols, rows)
    ]
    while stack:
        idx, x0, y0, w, h = stack.pop()
        n = len(idx)
        if n == 0:
            continue
        if n == 1:  # the nearest cell of this rectangle
            px, py = g[idx[0]]
            out[idx[0]] = (min(max(int(px), x0), x0 + w - 1), min(max(int(py), y0), y0 + h - 1))
            continue
        if n <= leaf:
            corner = np.array([x0, y0])
            out[idx] = _snap_assignment(g[idx] - corner, w, h) + corner
            continue
        axis = 0 if w >= h else 1
        if axis == 0:
            cut = w // 2
            cap_a, cap_b, line = cut * h, (w - cut) * h, x0 + cut
        else:
            cut = h // 2
            cap_a, cap_b, line = w * cut, w * (h - cut), y0 + cut
        coord = g[idx, axis]
        order = np.lexsort((g[idx, 1 - axis], coord))
        idx = idx[order]
        na = int(np.searchsorted(coord[order], line))
        na = min(max(na, n - cap_b), cap_a)
        if axis == 0:
            stack.append((idx[:na], x0, y0, cut, h))
            stack.append((idx[na:], x0 + cut, y0, w - cut, h))
        else:
            stack.append((idx[:na], x0, y0, w, cut))
            stack.append((idx[na:], x0, y0 + cut, w, h - cut))
    return out


def knn_accuracy_2d(xy: NDArray[Any] | Tensor, labels: NDArray[Any] | Tensor, k: int = 10) -> float:
    """Leave-one-out k-NN classification accuracy in the 2-D map: each labelled point is
    classified by the majority label of its `k` nearest other labelled points (ties go to
    the label of the nearer neighbour). Points labelled −1 are left out. Works for (N, D)
    points of any D too (a k-d tree; fine for a few thousand points in high dimensions)."""
    from scipy.spatial import cKDTree

    pts = _as_array(xy, "positions").astype(np.float64)
    lab = np.asarray(labels.cpu().numpy() if isinstance(labels, Tensor) else labels)
    lab = lab.astype(np.int64).ravel()
    if len(lab) != len(pts):
        raise UserInputError(f"got {len(lab)} labels for {len(pts)} points.")
    keep = lab >= 0
    pts, lab = pts[keep], lab[keep]
    n = len(pts)
    if k < 1:
        raise UserInputError(f"k must be at least 1, got {k}.")
    if n < k + 1:
        raise UserInputError(f"{k}-NN accuracy needs more than {k} labelled points, got {n}.")
    _, nb = cKDTree(pts).query(pts, k=k + 1)  # (n, k+1)
    nb = np.asarray(nb, dtype=np.int64)
    rows = np.arange(n)[:, None]
    is_self = nb == rows
    # Drop self where it was found, else the farthest neighbour (self lost among duplicates).
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k)
    mask = np.ones_like(nb, dtype=bool)
    mask[np.arange(n), drop] = False
    nb = nb[mask].reshape(n, k)
    votes = np.zeros((n, int(lab.max()) + 1))
    weights = 1.0 + (k - np.arange(k)) * 1e-6  # nearer neighbours win ties
    np.add.at(votes, (np.repeat(np.arange(n), k), lab[nb].ravel()), np.tile(weights, n))
    return float((votes.argmax(axis=1) == lab).mean())
