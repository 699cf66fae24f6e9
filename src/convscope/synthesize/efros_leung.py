"""Non-parametric texture synthesis: Efros & Leung's pixel sampling with Wei & Levoy's
tree-structured, multi-resolution search. The classic, non-neural baseline for Gatys et al.

The output is grown pixel by pixel. Each new pixel copies the centre pixel of an exemplar
neighbourhood that resembles the neighbourhood already synthesized around it: no model of the
texture is fitted, the exemplar *is* the model, and every output pixel is an exemplar pixel.

- Efros & Leung (1999) compare a Gaussian-weighted window around the pixel with every exemplar
  window, and choose uniformly among those whose distance (sum of squared differences, SSD)
  is within ``(1 + epsilon)`` of the best one: ``epsilon`` trades fidelity for variety.
- Wei & Levoy (2000) make it fast. The output is filled in scanline order, so the known part
  of every neighbourhood has one fixed *causal* shape: the ``window // 2`` rows above (the full
  window width) and the ``window // 2`` pixels to the left on the current row. Every
  neighbourhood is then a vector of one length, and a search tree built once per level over
  the exemplar's vectors answers each query. A Gaussian pyramid adds scale: the levels are
  synthesized coarse to fine, and at level ``l`` the vector also holds the full (non-causal)
  neighbourhood around the pixel's parent at level ``l + 1``, which is done already
  (3×3 for ``window`` 7, 5×5 for 9 and 11).

Here, per level, the exemplar vectors (each component scaled by the square root of its
Gaussian weight; sigma = ``window / 3.2``, twice Efros & Leung's ``window / 6.4``, whose
outer ring weighs almost nothing) are projected on the principal components holding 95% of
their variance, and a scikit-learn ``BallTree`` over those finds the ``candidates`` nearest;
they are re-ranked by the exact SSD and Efros & Leung's rule picks one (``epsilon = 0``: the
nearest, ties broken at random). Exemplar neighbourhoods never wrap: a candidate is an exemplar
position whose neighbourhoods at both levels lie inside the exemplar.

**Borders and the top rows.** Wei & Levoy index the output toroidally, so a neighbourhood that
runs off the image reads the other side, and start from random exemplar pixels, so the first
rows are matched against that noise and come out as garbage. Here the output starts from
random exemplar pixels too, but nothing outside the output and nothing not yet synthesized is
ever read: a neighbourhood that is incomplete (the first ``window // 2`` rows and columns,
the last ``window // 2`` columns, and pixels whose coarse neighbourhood leaves the coarse
output) is matched like Efros & Leung do it, by an exhaustive search with the missing
positions masked out, choosing uniformly among *all* exemplar vectors within
``(1 + epsilon)`` of the best (the very first pixel of the coarsest level is a random exemplar
pixel). The tree still answers about 80% of the queries at 128×128. Reading the wrap instead
puts a seam in the first columns (a periodic exemplar then loses its phase there) and
artifacts along the left edge. Then, since a first row only knows the pixels to its left and
comes out streaky, the first ``2 * (window // 2)`` rows of every level are synthesized a
second time, each pixel now matched with its whole window (minus the centre, masked to the
output), so they agree with the rows below them.

**Speed.** One query per pixel, one pixel at a time (each depends on the one before). A
128×128 texture from a 64×64 colour exemplar (a crop of ``skimage.data.immunohistochemistry``)
takes about 3.8 s with the defaults on one core of an AMD EPYC (``grep -m1 "model name"
/proc/cpuinfo``) shared with other jobs; uniform noise as the exemplar, where the tree cannot
prune, takes about 7.4 s. BLAS is held to one thread meanwhile: its per-pixel products are
tiny, and extra threads only contend.

**Defaults.** ``window=9``: on ``skimage.data.brick`` (at 1/4 scale) 7 grows bricks far too
long and stacks of thin ones; 11 is a little better but a third slower (5.1 s), and needs
a larger exemplar for 3 levels (41 pixels a side, against 33 for 9). ``levels=3``:
the coarsest exemplar level (1/4 size) then sees whole bricks. ``epsilon=0.1`` is Efros &
Leung's value; ``candidates=8`` leaves the rule a choice at little cost.

References:
    A. A. Efros, T. K. Leung. "Texture Synthesis by Non-parametric Sampling", ICCV 1999.
    L.-Y. Wei, M. Levoy. "Fast Texture Synthesis using Tree-structured Vector Quantization",
    SIGGRAPH 2000.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from sklearn import config_context
from sklearn.neighbors import BallTree
from threadpoolctl import threadpool_limits
from torch import Tensor

from convscope.errors import UserInputError
from convscope.events import Progress, ProgressCallback, no_progress

__all__ = ["EfrosLeungResult", "efros_leung"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]

_TASK = "efros-leung"
_BINOMIAL = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)  # the Gaussian pyramid's 5-tap kernel
_SIGMA = 1 / 3.2  # Gaussian weight sigma, as a fraction of the window (Efros & Leung: 1 / 6.4)
_PCA_ENERGY = 0.95  # the tree searches the principal components holding this share of variance
_TIE = 1e-10  # absolute slack on squared distances, so exact ties stay ties after rounding
_PROGRESS_EVERY = 4  # rows between progress events


@dataclass(frozen=True)
class EfrosLeungResult:
    image: Tensor  # (3, H, W) float32 in [0, 1]
    levels: int
    window: int
    seconds: float  # wall time of the synthesis itself (time.perf_counter)


def efros_leung(
    exemplar: Tensor,
    size: int | tuple[int, int],
    *,
    window: int = 9,
    levels: int = 3,
    epsilon: float = 0.1,
    candidates: int = 8,
    seed: int = 0,
    on_progress: ProgressCallback = no_progress,
) -> EfrosLeungResult:
    """Synthesize a texture of `size` (H, W, or one int for a square) like `exemplar`.

    `exemplar` is (3, h, w) or (1, 3, h, w), float in [0, 1] (grayscale as three equal
    channels); it is not modified, and the output may be larger than it. `window` is the
    (odd, >= 3) neighbourhood side, `levels` the number of Gaussian-pyramid levels (1 = single
    scale), `epsilon` Efros & Leung's tolerance (0 = always the nearest neighbourhood),
    `candidates` how many nearest neighbours the tree returns to choose among. The same `seed`
    gives the same image exactly. Every output pixel is a copy of an exemplar pixel. Progress
    is reported in rows (of every level and pass) to `on_progress`.
    """
    ex = _check_exemplar(exemplar)  # (h, w, 3) float32, a copy
    height, width = _check_size(size)
    for name, value in (("window", window), ("levels", levels), ("candidates", candidates)):
        _check_int(name, value)
    _check_int("seed", seed)
    if window < 3 or window % 2 == 0:
        raise UserInputError(f"window must be an odd integer of at least 3, got {window}.")
    if levels < 1:
        raise UserInputError(f"levels must be at least 1, got {levels}.")
    if candidates < 1:
        raise UserInputError(f"candidates must be at least 1, got {candidates}.")
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float):
        raise UserInputError(f"epsilon must be a number, got {type(epsilon).__name__}.")
    if not math.isfinite(epsilon) or epsilon < 0:
        raise UserInputError(f"epsilon must be a finite number of at least 0, got {epsilon}.")
    h, w = ex.shape[:2]
    if min(h, w) < window:
        raise UserInputError(
            f"The exemplar is {h}×{w} pixels but window={window} needs at least "
            f"{window}×{window} pixels."
        )
    most = _max_levels(h, w, window)
    if levels > most:
        raise UserInputError(
            f"levels={levels} is too many for a {h}×{w} exemplar with window={window}: at most "
            f"{most} keep every pyramid level at least {window} pixels on a side."
        )

    start = time.perf_counter()
    # the per-pixel products are tiny: BLAS threads only contend (10x slower on a busy machine)
    with threadpool_limits(limits=1, user_api="blas"):
        image = _synthesize(
            ex, (height, width), window, levels, float(epsilon), candidates, seed, on_progress
        )  # (H, W, 3)
    seconds = time.perf_counter() - start
    out = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))  # (3, H, W)
    return EfrosLeungResult(image=out, levels=levels, window=window, seconds=seconds)


# --- validation at the boundary --------------------------------------------------------------


def _max_levels(h: int, w: int, window: int) -> int:
    """The most pyramid levels an h×w exemplar allows: every level at least `window` a side."""
    n = 0
    while min(h, w) >= window:
        n += 1
        h, w = (h + 1) // 2, (w + 1) // 2
    return n


def _check_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserInputError(f"{name} must be an integer, got {type(value).__name__}.")


def _check_size(size: object) -> tuple[int, int]:
    pair: tuple[object, ...]
    if isinstance(size, int) and not isinstance(size, bool):
        pair = (size, size)
    elif isinstance(size, tuple) and len(size) == 2:
        pair = size
    else:
        raise UserInputError(f"size must be an integer or a pair (H, W) of integers, got {size!r}.")
    height, width = pair
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise UserInputError(f"size must hold integers, got {size!r}.")
    assert isinstance(height, int) and isinstance(width, int)
    if height < 1 or width < 1:
        raise UserInputError(f"size must be at least 1 pixel on each side, got {size!r}.")
    return height, width


def _check_exemplar(exemplar: object) -> F32:
    if not isinstance(exemplar, Tensor):
        raise UserInputError(f"The exemplar must be a torch tensor, got {type(exemplar).__name__}.")
    x = exemplar.detach()
    if x.dim() == 4 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 3 or x.shape[0] != 3:
        raise UserInputError(
            f"The exemplar must have shape (3, h, w) or (1, 3, h, w), got {tuple(exemplar.shape)}."
        )
    if not x.is_floating_point():
        raise UserInputError(f"The exemplar must be a float tensor in [0, 1], got {x.dtype}.")
    if x.numel() == 0:
        raise UserInputError(f"The exemplar is empty: shape {tuple(exemplar.shape)}.")
    if not bool(torch.isfinite(x).all()):
        raise UserInputError("The exemplar holds NaN or infinite values.")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise UserInputError(f"The exemplar's values must lie in [0, 1], got [{lo:.3g}, {hi:.3g}].")
    arr: F32 = x.to(device="cpu", dtype=torch.float32).numpy().transpose(1, 2, 0).copy()
    return arr  # (h, w, 3), never a view of the caller's tensor


# --- neighbourhoods --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Shape:
    """A neighbourhood: offsets at the level being synthesized (causal, or the whole window
    but its centre), offsets around the parent pixel at the coarser level (none at the
    coarsest), and the square roots of their Gaussian weights."""

    dy: I64  # (n,)
    dx: I64
    sw: F64
    cdy: I64  # (m,), m = 0 at the coarsest level
    cdx: I64
    csw: F64

    @property
    def size(self) -> int:
        return 3 * (len(self.dy) + len(self.cdy))


def _shape(window: int, *, causal: bool, coarse: bool) -> _Shape:
    r = window // 2
    grid = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
    # causal: the rows above, then the pixels left of the centre (scanline order)
    keep = [(dy, dx) for dy, dx in grid if (dy, dx) < (0, 0) or (not causal and (dy, dx) > (0, 0))]
    dy, dx = (np.array(v, dtype=np.int64) for v in zip(*keep, strict=True))
    sigma = _SIGMA * window
    sw = np.sqrt(_gaussian(dy, dx, sigma))
    cw = max(3, (window // 2) | 1) if coarse else 0  # 3×3 for window 7, 5×5 for 9 and 11
    cgrid = np.arange(-(cw // 2), cw // 2 + 1, dtype=np.int64)
    cdy, cdx = np.repeat(cgrid, cw), np.tile(cgrid, cw)
    csw = np.sqrt(_gaussian(2 * cdy, 2 * cdx, sigma))  # a coarse offset spans 2 fine pixels
    return _Shape(dy=dy, dx=dx, sw=sw, cdy=cdy, cdx=cdx, csw=csw)


def _gaussian(dy: I64, dx: I64, sigma: float) -> F64:
    d2 = (dy**2 + dx**2).astype(np.float64)
    return np.asarray(np.exp(-d2 / (2 * sigma**2)), dtype=np.float64)


def _blur_down(img: F32) -> F32:
    """One Gaussian-pyramid step: binomial blur (mirrored edges), keep every other pixel.
    (h, w, 3) → (ceil(h / 2), ceil(w / 2), 3)."""
    h, w = img.shape[:2]
    p = np.pad(img, ((2, 2), (2, 2), (0, 0)), mode="symmetric")
    rows = np.zeros((h, w + 4, 3), dtype=np.float32)
    for i, k in enumerate(_BINOMIAL):
        rows += np.float32(k) * p[i : i + h]
    both = np.zeros((h, w, 3), dtype=np.float32)
    for i, k in enumerate(_BINOMIAL):
        both += np.float32(k) * rows[:, i : i + w]
    return both[::2, ::2].copy()


def _exemplar_vectors(fine: F32, coarse: F32 | None, shape: _Shape) -> tuple[F64, I64]:
    """The weighted neighbourhood vectors at every exemplar position whose neighbourhoods lie
    inside the exemplar at both levels (no wrap: every candidate is a real exemplar pixel):
    (N, D) vectors and the (N,) flat pixel index of each."""
    h, w = fine.shape[:2]
    ys, xs = np.mgrid[
        -shape.dy.min() : h - max(int(shape.dy.max()), 0),
        -shape.dx.min() : w - shape.dx.max(),
    ]
    ys, xs = ys.ravel(), xs.ravel()
    if coarse is not None:
        hc, wc = coarse.shape[:2]
        rc = int(shape.cdy.max())
        py, px = ys // 2, xs // 2
        inside = (py >= rc) & (py < hc - rc) & (px >= rc) & (px < wc - rc)
        ys, xs = ys[inside], xs[inside]
    near = fine[ys[:, None] + shape.dy, xs[:, None] + shape.dx]  # (N, n, 3)
    parts = [(near * shape.sw[:, None]).reshape(len(ys), -1)]
    if coarse is not None:
        cnear = coarse[ys[:, None] // 2 + shape.cdy, xs[:, None] // 2 + shape.cdx]  # (N, m, 3)
        parts.append((cnear * shape.csw[:, None]).reshape(len(ys), -1))
    vectors = np.concatenate(parts, axis=1).astype(np.float64)  # (N, D)
    return vectors, (ys * w + xs).astype(np.int64)


def _coarse_part(coarse_out: F32 | None, size: tuple[int, int], shape: _Shape) -> tuple[F64, Mask]:
    """The coarse half of every output pixel's vector, fixed while a level is synthesized:
    (H, W, 3 m) weighted values and the (H, W, m) mask of offsets inside the coarse output."""
    height, width = size
    m = len(shape.cdy)
    if coarse_out is None:
        return np.zeros((height, width, 0)), np.ones((height, width, 0), dtype=bool)
    hc, wc = coarse_out.shape[:2]
    rows = np.arange(height)[:, None] // 2 + shape.cdy  # (H, m)
    cols = np.arange(width)[:, None] // 2 + shape.cdx  # (W, m)
    near = coarse_out[rows[:, None, :] % hc, cols[None, :, :] % wc]  # (H, W, m, 3)
    values = (near * shape.csw[:, None]).reshape(height, width, 3 * m).astype(np.float64)
    inside = ((rows >= 0) & (rows < hc))[:, None, :] & ((cols >= 0) & (cols < wc))[None]
    return values, inside


# --- search ----------------------------------------------------------------------------------


def _choose(ssd: F64, epsilon: float, rng: np.random.Generator) -> int:
    """Efros & Leung's rule: uniformly among the squared distances within (1 + epsilon) of the
    smallest. Returns an index into `ssd`."""
    ok = np.flatnonzero(ssd <= float(ssd.min()) * (1.0 + epsilon) + _TIE)
    return int(ok[rng.integers(len(ok))])


class _Masked:
    """Efros & Leung's exhaustive search with a mask: the squared distance over the known
    components only, for neighbourhoods that are not complete. Expanded as
    sum(known * (v**2 - 2 v q + q**2)) so that one matrix-vector product does it."""

    def __init__(self, vectors: F64) -> None:
        self.both = np.ascontiguousarray(np.hstack([vectors * vectors, vectors]))  # (N, 2 D)
        self.d = vectors.shape[1]

    def query(self, q: F64, known: Mask, epsilon: float, rng: np.random.Generator) -> int:
        weights = np.empty(2 * self.d)  # (2 D,)
        weights[: self.d] = known
        weights[self.d :] = -2.0 * q * known
        ssd = np.maximum(self.both @ weights + float(q[known] @ q[known]), 0.0)  # (N,)
        return _choose(ssd, epsilon, rng)


class _Tree:
    """Wei & Levoy's tree search for complete neighbourhoods: a ball tree over the vectors'
    leading principal components returns `candidates` near vectors, re-ranked by the exact
    distance before Efros & Leung's rule picks one."""

    def __init__(self, vectors: F64, candidates: int) -> None:
        self.vectors = vectors  # (N, D)
        self.k = min(candidates, len(vectors))
        self.mean = vectors.mean(axis=0)  # (D,)
        centred = vectors - self.mean
        variance, axes = np.linalg.eigh(centred.T @ centred)  # ascending
        variance, axes = np.maximum(variance[::-1], 0.0), axes[:, ::-1]
        energy = np.cumsum(variance)
        keep = int(np.searchsorted(energy, _PCA_ENERGY * energy[-1])) + 1
        self.basis = np.ascontiguousarray(axes[:, : min(keep, len(variance))])  # (D, d)
        self.tree = BallTree(centred @ self.basis)

    def query(self, q: F64, epsilon: float, rng: np.random.Generator) -> int:
        with config_context(assume_finite=True):  # skips a per-call finiteness scan
            _, ind = self.tree.query(((q - self.mean) @ self.basis)[None], k=self.k)
        found = ind[0]  # (k,)
        diff = self.vectors[found] - q
        return int(found[_choose(np.einsum("ij,ij->i", diff, diff), epsilon, rng)])


# --- synthesis -------------------------------------------------------------------------------


def _synthesize(
    ex: F32,
    size: tuple[int, int],
    window: int,
    levels: int,
    epsilon: float,
    candidates: int,
    seed: int,
    on_progress: ProgressCallback,
) -> F32:
    rng = np.random.default_rng(seed)
    pyramid = [ex]  # finest first: level l is (ceil(h / 2^l), ceil(w / 2^l), 3)
    sizes = [size]
    for _ in range(levels - 1):
        pyramid.append(_blur_down(pyramid[-1]))
        sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))
    redo = 2 * (window // 2)  # rows synthesized a second time at the top of every level
    progress = _Rows(on_progress, sum(s[0] + min(redo, s[0]) for s in sizes))
    out: F32 | None = None
    for level in reversed(range(levels)):
        coarse_ex = pyramid[level + 1] if level + 1 < levels else None
        out = _level(
            pyramid[level], coarse_ex, out, sizes[level], window, redo, epsilon, candidates, rng,
            progress,
        )  # fmt: skip
    assert out is not None
    return out


class _Rows:
    """Counts synthesized rows over every level and pass; reports every few."""

    def __init__(self, on_progress: ProgressCallback, total: int) -> None:
        self.on_progress, self.total, self.done = on_progress, total, 0
        on_progress(Progress(_TASK, 0, total, "rows"))

    def row(self) -> None:
        self.done += 1
        if self.done % _PROGRESS_EVERY == 0 or self.done == self.total:
            self.on_progress(Progress(_TASK, self.done, self.total, "rows"))


def _level(
    ex: F32,
    coarse_ex: F32 | None,
    coarse_out: F32 | None,
    size: tuple[int, int],
    window: int,
    redo: int,
    epsilon: float,
    candidates: int,
    rng: np.random.Generator,
    progress: _Rows,
) -> F32:
    """Synthesize one pyramid level in scanline order, then its first `redo` rows again."""
    height, width = size
    h, w = ex.shape[:2]
    ex_flat = ex.reshape(-1, 3)  # (h w, 3)
    # Wei & Levoy's start: random exemplar pixels (never matched against: see the docstring)
    flat = ex_flat[rng.integers(0, h * w, size=height * width)]  # (H W, 3)
    out = flat.reshape(height, width, 3)  # a view: writing flat writes out

    # pass 1: causal neighbourhoods; the tree where complete, a masked search elsewhere
    shape = _shape(window, causal=True, coarse=coarse_ex is not None)
    vectors, where = _exemplar_vectors(ex, coarse_ex, shape)  # (N, D), (N,)
    tree, masked = _Tree(vectors, candidates), _Masked(vectors)
    n = 3 * len(shape.dy)
    coarse_q, coarse_ok = _coarse_part(coarse_out, size, shape)  # (H, W, 3 m), (H, W, m)
    complete = np.asarray(coarse_ok.all(axis=2), dtype=bool)  # (H, W)
    cols = np.arange(width)[:, None] + shape.dx  # (W, n)
    inside_x = (cols >= 0) & (cols < width)
    cols %= width  # only read where inside
    sw3 = np.repeat(shape.sw, 3)  # (n * 3,)
    q = np.empty(shape.size, dtype=np.float64)  # (D,)
    for y in range(height):
        base = (y + shape.dy) * width  # (n,)
        inside_y = (y + shape.dy) >= 0
        for x in range(width):
            q[n:] = coarse_q[y, x]
            ok = inside_y & inside_x[x]  # (n,) already synthesized and inside the output
            if complete[y, x] and ok.all():
                q[:n] = flat[base + cols[x]].ravel() * sw3
                pick = tree.query(q, epsilon, rng)
            else:
                q[:n] = flat[np.where(ok, base + cols[x], 0)].ravel() * sw3
                known = np.concatenate([np.repeat(ok, 3), np.repeat(coarse_ok[y, x], 3)])
                pick = masked.query(q, known, epsilon, rng)
            flat[y * width + x] = ex_flat[where[pick]]
        progress.row()

    # pass 2: the first rows again, each pixel now matched with the whole window around it
    # (masked to the output), so they agree with the rows below them
    full = _shape(window, causal=False, coarse=coarse_ex is not None)
    vectors, where = _exemplar_vectors(ex, coarse_ex, full)
    masked = _Masked(vectors)
    n = 3 * len(full.dy)
    sw3 = np.repeat(full.sw, 3)
    q = np.empty(full.size, dtype=np.float64)
    for y in range(min(redo, height)):  # `where` is never empty when levels <= _max_levels
        rows = y + full.dy  # (n,)
        for x in range(width):
            cols_x = x + full.dx
            ok = (rows >= 0) & (rows < height) & (cols_x >= 0) & (cols_x < width)
            q[:n] = flat[np.where(ok, rows * width + cols_x, 0)].ravel() * sw3
            q[n:] = coarse_q[y, x]
            known = np.concatenate([np.repeat(ok, 3), np.repeat(coarse_ok[y, x], 3)])
            flat[y * width + x] = ex_flat[where[masked.query(q, known, epsilon, rng)]]
        progress.row()
    return out
