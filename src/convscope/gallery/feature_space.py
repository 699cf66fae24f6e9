"""Feature space: smallnet's `embed` features of the bundled 8×8 digits as a t-SNE map of
thumbnails (and snapped to a grid); nearest neighbours in feature space against pixel space,
for the digits and for recoloured, mirrored crops of the bundled photos under
efficientnet_lite0."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from convscope.data.datasets import AugmentedCrops, load_dataset
from convscope.data.files import atomic_write_text
from convscope.events import Progress
from convscope.gallery.context import DemoContext
from convscope.inspect.embed import embed_2d, grid_snap, knn_accuracy_2d
from convscope.inspect.features import image_features
from convscope.inspect.neighbors import Metric, drop_self, nearest, pixels_of
from convscope.models import ConvModel
from convscope.render.embedding import embedding_html, embedding_image
from convscope.render.grids import image_grid, titled
from convscope.render.html import Figure, Section

TITLE = "Feature space"

PHOTO_MODEL = "efficientnet_lite0"
PHOTO_LAYER = "head"  # the 1280 channels that, average-pooled, feed the classifier
CROPS_PER_PHOTO = 12
CROP_SIZE = 224
CROP_SEED = 0
PIXEL_SIZE = 32  # pixel space: 32×32 RGB thumbnails
NEIGHBOURS = 8  # shown per query
VOTE_K = 10  # leave-one-out k-NN vote, as for the digits


def first_of_each(labels: Sequence[int]) -> list[int]:
    """The query rule for the photo crops: the index of the first item of each label, in
    order of the labels' first appearance."""
    seen: set[int] = set()
    out: list[int] = []
    for i, lab in enumerate(labels):
        if lab not in seen:
            seen.add(lab)
            out.append(i)
    return out


def loo_accuracy(x: Tensor, labels: Sequence[int], k: int, metric: Metric = "l2") -> float:
    """Leave-one-out `k`-NN vote accuracy of `labels` over the rows of `x` (N, D), with
    `metric` distances (cosine ranks as L2 between unit vectors)."""
    rows = F.normalize(x.double(), dim=1) if metric == "cosine" else x.double()
    return knn_accuracy_2d(rows, torch.as_tensor(list(labels)), k=k)


def _compare(a: float, b: float) -> str:
    """How `a` compares with `b`, as words for a caption."""
    return "higher than" if a > b else "lower than" if a < b else "the same as"


def section(ctx: DemoContext) -> Section:
    skipped: list[str] = []
    digit_figures = _digits(ctx)
    photo = ctx.try_model(PHOTO_MODEL, skipped)
    photo_figures = [] if photo is None else [_photos(ctx, photo)]
    return Section(
        TITLE,
        "Each 8×8 digit becomes a 32-number vector at smallnet's `embed` layer (its "
        "penultimate layer). t-SNE lays those vectors out in 2-D so that neighbours stay "
        "neighbours: the classes separate without the network ever being asked to draw a map. "
        "features_map.html in this folder is the same map to zoom and hover. Nearest "
        "neighbours then compare a trained network's feature space with raw pixels. The "
        "bundled digits are centred, size-normalised and gray, so raw pixels already find the "
        "right class about as often as the features do, and the digit figure cannot show the "
        "difference. Crops of photos that are moved, mirrored and recoloured do: there, "
        "neighbours in efficientnet_lite0's feature space share what the crop shows, while "
        "neighbours in pixel space share colour and layout.",
        [*digit_figures, *photo_figures],
        notes=tuple(skipped),
    )


def _digits(ctx: DemoContext) -> list[Figure]:
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
    return [
        Figure(
            f1.src,
            f"t-SNE of smallnet `embed` features (openTSNE, perplexity 30). Leave-one-out "
            f"10-NN accuracy in this 2-D map: {acc:.3f} (PCA map: {acc_pca:.3f}).",
            wide=True,
        ),
        Figure(f2.src, "The same map with every image moved to its own grid cell."),
        Figure(
            f3.src,
            f"Not typical digits: the four (one per class) on which the two spaces disagree "
            f"most about the class of the 8 nearest digits (L2 distance; each neighbour is "
            f"labelled distance · class). Same class as the query: {feat_agree}/{total} in "
            f"feature space, {pix_agree}/{total} in pixel space. Over all {n} digits, "
            f"leave-one-out 10-NN accuracy is {acc_feat:.3f} in feature space, "
            f"{_compare(acc_feat, acc_pix)} {acc_pix:.3f} in pixel space: on these aligned "
            f"8×8 digits raw pixels are already a good space, so this figure shows where the "
            f"two spaces differ, not that features are better. The photo figure shows that.",
        ),
    ]


def _photos(ctx: DemoContext, cm: ConvModel) -> Figure:
    ds = AugmentedCrops(CROPS_PER_PHOTO, size=CROP_SIZE, seed=CROP_SEED)
    photos = ds.classes or []
    labels = ds.labels
    images = [ds[i].image for i in range(len(ds))]  # each (3, 224, 224)
    n = len(images)
    batch = 16
    parts: list[Tensor] = []
    for lo in range(0, n, batch):
        parts.append(image_features(cm, images[lo : lo + batch], PHOTO_LAYER))  # (b, 1280)
        ctx.on_progress(Progress("features", min(n, lo + batch), n, "crops"))
    feats = torch.cat(parts)  # (N, 1280)
    pix = pixels_of(images, PIXEL_SIZE)  # (N, 3·32·32)
    k = NEIGHBOURS
    spaces: list[tuple[str, Tensor, Metric]] = [
        ("features", feats, "cosine"),
        ("pixels", pix, "l2"),
    ]
    found = {name: nearest(x, x, k + 1, metric=metric) for name, x, metric in spaces}

    queries = first_of_each(labels)
    tiles: list[Tensor] = []
    names: list[str] = []
    hits = {"features": 0, "pixels": 0}
    for q in queries:
        for kind, _, _ in spaces:
            d, i = found[kind]
            dists, ids = drop_self(d[q], i[q], q, k)
            tiles.append(images[q])
            names.append(f"{kind}: {photos[labels[q]]}")
            tiles.extend(images[r] for r in ids)
            names.extend(
                f"{dd:.2g} · {photos[labels[r]]}" for dd, r in zip(dists, ids, strict=True)
            )
            hits[kind] += sum(labels[r] == labels[q] for r in ids)
    grid = image_grid(tiles, ncol=k + 1, labels=names, tile=96)
    fig = ctx.save(
        "features_neighbors_photos.png",
        titled(grid, f"{k} nearest: {PHOTO_MODEL} features (upper) vs pixels (lower)"),
    )
    acc_feat = loo_accuracy(feats, labels, VOTE_K, "cosine")
    acc_pix = loo_accuracy(pix, labels, VOTE_K, "l2")
    shown = len(queries) * k
    return Figure(
        fig.src,
        f"{n} crops of {len(photos)} bundled photos ({', '.join(photos)}), {CROPS_PER_PHOTO} "
        f"each: a random square of 45–90 % of the photo's short side resized to {CROP_SIZE} "
        f"px, mirrored half of the time, and recoloured by one of none, hue rotation, RGB "
        f"channel swap, grayscale or brightness-contrast (AugmentedCrops, seed {CROP_SEED}). "
        f"Queries, by a rule fixed in advance: the first crop of each photo. Each row is the "
        f"query and its {k} nearest other crops, labelled distance · source photo; upper "
        f"rows: {PHOTO_MODEL} `{PHOTO_LAYER}` features average-pooled (the classifier's "
        f"{feats.shape[1]}-d input), cosine distance; lower rows: {PIXEL_SIZE}×{PIXEL_SIZE} "
        f"RGB thumbnails, L2 distance. From the query's photo: {hits['features']}/{shown} in "
        f"feature space, {hits['pixels']}/{shown} in pixel space. Over all {n} crops, "
        f"leave-one-out {VOTE_K}-NN accuracy at naming the source photo is {acc_feat:.3f} in "
        f"feature space and {acc_pix:.3f} in pixel space (chance: 1/{len(photos)} ≈ "
        f"{1 / len(photos):.2f}).",
        wide=True,
    )
