"""Feature space: smallnet's `embed` features of the bundled 8×8 digits as a t-SNE map of
thumbnails (and snapped to a grid), and nearest neighbours in feature space against pixel
space."""

from __future__ import annotations

import torch
from torch import Tensor

from convscope.data.datasets import load_dataset
from convscope.data.files import atomic_write_text
from convscope.gallery.context import DemoContext
from convscope.inspect.embed import embed_2d, grid_snap, knn_accuracy_2d
from convscope.inspect.features import image_features
from convscope.inspect.neighbors import drop_self, nearest
from convscope.render.embedding import embedding_html, embedding_image
from convscope.render.grids import image_grid, titled
from convscope.render.html import Figure, Section

TITLE = "Feature space"


def section(ctx: DemoContext) -> Section:
    cm = ctx.model("smallnet")
    ds = load_dataset("digits")
    images = torch.stack([ds[i].image for i in range(len(ds))])  # (N, 3, 8, 8)
    labels = torch.as_tensor(getattr(ds, "labels", [ds[i].label for i in range(len(ds))]))
    feats = torch.cat(
        [image_features(cm, images[lo : lo + 512], "embed") for lo in range(0, len(ds), 512)]
    )  # (N, 32)
    xy = embed_2d(feats, method="tsne", seed=0, on_progress=ctx.on_progress)
    acc = knn_accuracy_2d(xy, labels, k=10)
    acc_pca = knn_accuracy_2d(embed_2d(feats, method="pca"), labels, k=10)
    classes = ds.classes
    n = len(ds)
    size = 1400
    m1 = embedding_image(xy, images, size=size, labels=labels, classes=classes)
    f1 = ctx.save("features_tsne.png", titled(m1, f"smallnet embed · t-SNE · {n} digits"))
    m2 = embedding_image(grid_snap(xy), images, size=size, grid=True, labels=labels)
    f2 = ctx.save("features_tsne_grid.png", titled(m2, "the same map, snapped to a grid"))
    page = embedding_html(
        xy,
        images,
        labels,
        title="smallnet embed · t-SNE of the digits",
        idents=[ds.ident(i) for i in range(n)],
        classes=classes,
        subtitle="convscope demo",
    )
    atomic_write_text(ctx.out / "features_map.html", page)

    # Neighbours: feature space against raw pixels (8×8, as the digits are).
    k = 8
    pix = images.reshape(n, -1)  # (N, 192)
    pd, pi = nearest(pix, pix, k + 1)  # every digit's neighbours, in both spaces
    fd, fi = nearest(feats, feats, k + 1)

    def same_class(d: Tensor, i: Tensor, q: int) -> int:
        return sum(int(labels[r]) == int(labels[q]) for r in drop_self(d, i, q, k)[1])

    gap = [abs(same_class(fd[q], fi[q], q) - same_class(pd[q], pi[q], q)) for q in range(n)]
    queries: list[int] = []
    for q in sorted(range(n), key=lambda i: (-gap[i], i)):  # most disagreement, one per class
        if all(int(labels[q]) != int(labels[o]) for o in queries):
            queries.append(q)
        if len(queries) == 4:
            break
    tiles: list[Tensor] = []
    names: list[str] = []
    feat_agree = pix_agree = 0
    for q in queries:
        for kind, (d, i) in (("features", (fd[q], fi[q])), ("pixels", (pd[q], pi[q]))):
            dists, ids = drop_self(d, i, q, k)
            tiles.append(images[q])
            names.append(f"{kind}: digit {int(labels[q])}")
            tiles.extend(images[r] for r in ids)
            names.extend(f"{dd:.2g} · {int(labels[r])}" for dd, r in zip(dists, ids, strict=True))
            same = sum(int(labels[r]) == int(labels[q]) for r in ids)
            if kind == "features":
                feat_agree += same
            else:
                pix_agree += same
    grid = image_grid(tiles, ncol=k + 1, labels=names, tile=96)
    f3 = ctx.save(
        "features_neighbors.png",
        titled(grid, "8 nearest: smallnet features (upper) vs pixels (lower)"),
    )
    acc_feat = knn_accuracy_2d(feats, labels, k=10)  # the same vote, in 32-d
    acc_pix = knn_accuracy_2d(pix, labels, k=10)  # and in 192-d pixel space
    total = len(queries) * k
    return Section(
        TITLE,
        "Each 8×8 digit becomes a 32-number vector at smallnet's `embed` layer (its "
        "penultimate layer). t-SNE lays those vectors out in 2-D so that neighbours stay "
        "neighbours: the classes separate without the network ever being asked to draw a map. "
        "features_map.html in this folder is the same map to zoom and hover.",
        [
            Figure(
                f1.src,
                f"t-SNE of smallnet `embed` features (openTSNE, perplexity 30). Leave-one-out "
                f"10-NN accuracy in this 2-D map: {acc:.3f} (PCA map: {acc_pca:.3f}).",
                wide=True,
            ),
            Figure(f2.src, "The same map with every image moved to its own grid cell."),
            Figure(
                f3.src,
                f"The four digits (one per class) on which the two spaces disagree most about "
                f"the class of the 8 nearest digits (L2 distance). "
                f"Same class as the query: {feat_agree}/{total} in feature space, "
                f"{pix_agree}/{total} in pixel space. Over all {n} digits, leave-one-out 10-NN "
                f"accuracy is {acc_feat:.3f} in feature space and {acc_pix:.3f} in pixel space.",
            ),
        ],
    )
