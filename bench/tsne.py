"""t-SNE speed and quality: convscope's `embed_2d(method="tsne")` (openTSNE with PCA-50,
approximate neighbours, FFT gradients, every core) against scikit-learn's TSNE, on 10,000
clustered 1280-d features (EfficientNet-Lite0's width), with the same perplexity (30) and the
same number of iterations (250 early exaggeration + 500 = 750).

Goals: speed ratio sklearn / ours ≥ 3, and trustworthiness within 0.01 of sklearn's.
Our run is timed before and after sklearn's, and the ratio uses their mean, so that a change
in machine load during the run affects both sides alike. The load average is printed: on a
busy machine sklearn's threads suffer more than our single idle-core thread, so the ratio is
larger there than on an idle one.

    python bench/tsne.py [--n 10000] [--dim 1280] [--perplexity 30] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray


def clustered_features(n: int, dim: int, *, clusters: int = 10, seed: int = 0) -> NDArray[Any]:
    """`clusters` Gaussian clusters in `dim` dimensions, each spread along its own random
    20-dimensional subspace plus a little isotropic noise (like CNN features, which lie near
    low-dimensional manifolds), non-negative after a ReLU-like shift. Fixed by `seed`."""
    rng = np.random.default_rng(seed)
    latent = 20
    centers = rng.normal(0.0, 1.0, (clusters, dim))
    bases = rng.normal(0.0, 1.0 / np.sqrt(latent), (clusters, latent, dim))
    labels = rng.integers(0, clusters, n)
    z = rng.normal(0.0, 1.0, (n, latent))
    x = centers[labels] + np.einsum("nl,nld->nd", z, bases[labels])
    x += rng.normal(0.0, 0.3, (n, dim))
    return np.maximum(x + 0.5, 0.0).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--perplexity", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--neighbors", type=int, default=10, help="k of trustworthiness")
    args = ap.parse_args()

    from sklearn.manifold import TSNE, trustworthiness

    from convscope.inspect.embed import EARLY_EXAGGERATION_ITER, N_ITER, embed_2d, idle_cores

    x = clustered_features(args.n, args.dim, seed=args.seed)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    iters = EARLY_EXAGGERATION_ITER + N_ITER
    print(
        f"{args.n} x {args.dim} features, perplexity {args.perplexity}, {iters} iterations, "
        f"{cores} cores, load average {os.getloadavg()[0]:.1f} "
        f"(convscope uses {idle_cores()} thread(s), sklearn {cores})"
    )

    def ours() -> tuple[float, NDArray[Any]]:
        t = time.perf_counter()
        xy = embed_2d(x, method="tsne", perplexity=args.perplexity, seed=args.seed)
        return time.perf_counter() - t, xy

    t_ours_1, xy_ours = ours()
    print(f"convscope (openTSNE): {t_ours_1:7.1f} s", flush=True)
    t = time.perf_counter()
    xy_sk = TSNE(
        n_components=2,
        perplexity=args.perplexity,
        max_iter=iters,
        init="pca",
        learning_rate="auto",
        random_state=args.seed,
        n_jobs=cores,
    ).fit_transform(x)
    t_sk = time.perf_counter() - t
    print(f"scikit-learn TSNE:    {t_sk:7.1f} s", flush=True)
    t_ours_2, _ = ours()
    print(f"convscope again:      {t_ours_2:7.1f} s", flush=True)
    t_ours = (t_ours_1 + t_ours_2) / 2
    k = args.neighbors
    tw_ours = trustworthiness(x, xy_ours, n_neighbors=k)
    tw_sk = trustworthiness(x, xy_sk, n_neighbors=k)
    ratio = t_sk / t_ours
    print(f"speed ratio sklearn / convscope: {ratio:.2f}x (goal >= 3)")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    print(
        f"trustworthiness@{k}: convscope {tw_ours:.4f}, sklearn {tw_sk:.4f}, "
        f"difference {tw_ours - tw_sk:+.4f} (goal: within 0.01)"
    )


if __name__ == "__main__":
    main()
