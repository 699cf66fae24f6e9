"""2-D maps: t-SNE of smallnet's digit features keeps the classes apart, grid snapping never
collides, k-NN accuracy, and the PNG / self-contained HTML renderings."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from convscope.errors import UserInputError
from convscope.events import Progress
from convscope.inspect.embed import embed_2d, grid_shape, grid_snap, knn_accuracy_2d
from convscope.render.embedding import embedding_html, embedding_image


@pytest.fixture(scope="module")
def digit_features() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """smallnet `embed` features (N, 32), labels and images of the bundled 8×8 digits."""
    from convscope.data.datasets import digits
    from convscope.errors import WeightsUnavailableError
    from convscope.inspect.features import image_features
    from convscope.models import load_model

    try:
        model = load_model("smallnet")
    except WeightsUnavailableError as exc:
        pytest.skip(f"smallnet's shipped checkpoint is missing: {exc}")
    ds = digits()
    images = torch.stack([ds[i].image for i in range(len(ds))])  # (1797, 3, 8, 8)
    feats = torch.cat([image_features(model, images[i : i + 600], "embed") for i in (0, 600, 1200)])
    return feats, torch.as_tensor(ds.labels), images


def test_tsne_of_smallnet_digits_separates_classes(
    digit_features: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> None:
    feats, labels, _ = digit_features
    feats, labels = feats[::3], labels[::3]  # 599 digits keep the test fast
    events: list[Progress] = []
    xy = embed_2d(feats, method="tsne", seed=0, on_progress=events.append)
    assert xy.shape == (len(feats), 2) and xy.dtype == np.float32
    acc = knn_accuracy_2d(xy, labels, k=10)
    assert acc >= 0.9, acc
    assert events[-1].done == events[-1].total == 750  # 250 + 500 iterations, never fewer


def test_pca_map(digit_features: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
    feats, labels, _ = digit_features
    xy = embed_2d(feats, method="pca")
    assert xy.shape == (len(feats), 2)
    np.testing.assert_allclose(xy, embed_2d(feats.numpy(), method="pca"), atol=1e-4)
    assert knn_accuracy_2d(xy, labels) > 0.5  # PCA keeps less than t-SNE, but far above 0.1


def test_embed_small_and_bad_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    xy = embed_2d(rng.normal(size=(12, 5)), method="tsne", perplexity=30)  # perplexity lowered
    assert xy.shape == (12, 2) and np.isfinite(xy).all()
    with pytest.raises(UserInputError, match="method"):
        embed_2d(rng.normal(size=(12, 5)), method="mds")  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="NaN"):
        embed_2d(np.full((5, 3), np.nan), method="pca")
    with pytest.raises(UserInputError, match="at least 4"):
        embed_2d(rng.normal(size=(3, 5)), method="tsne")
    monkeypatch.setitem(sys.modules, "umap", None)  # as if umap-learn were not installed
    with pytest.raises(UserInputError, match=r"pip install") as info:
        embed_2d(rng.normal(size=(12, 5)), method="umap")
    assert "umap-learn" in str(info.value) and len(str(info.value).splitlines()) == 1


@pytest.mark.parametrize("n", [1, 7, 300, 1500])
def test_grid_snap_has_no_collisions(n: int) -> None:
    rng = np.random.default_rng(n)
    pts = np.concatenate([rng.normal(size=(n - n // 3, 2)), np.zeros((n // 3, 2))])  # dupes
    cells = grid_snap(pts)
    cols, rows = grid_shape(pts)
    assert cells.shape == (n, 2)
    assert len({(int(a), int(b)) for a, b in cells}) == n
    assert (cells >= 0).all() and (cells[:, 0] < cols).all() and (cells[:, 1] < rows).all()


def test_grid_snap_keeps_order_and_checks_shape() -> None:
    pts = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert grid_snap(pts, shape=(2, 2)).tolist() == [[0, 0], [1, 0], [0, 1], [1, 1]]
    line = np.stack([np.linspace(0, 1, 50), np.zeros(50)], axis=1)
    cells = grid_snap(line, shape=(50, 1))
    assert cells[:, 0].tolist() == list(range(50))
    with pytest.raises(UserInputError, match="fewer than"):
        grid_snap(pts, shape=(1, 3))


def test_knn_accuracy() -> None:
    a = np.zeros((20, 2))
    a[10:] += 100
    a += np.random.default_rng(0).normal(scale=0.1, size=(20, 2))
    labels = np.array([0] * 10 + [1] * 10)
    assert knn_accuracy_2d(a, labels, k=3) == 1.0
    assert knn_accuracy_2d(a, 1 - labels, k=3) == 1.0
    assert knn_accuracy_2d(a, np.array([0] * 10 + [1] * 9 + [-1]), k=3) == 1.0  # -1 ignored
    swapped = labels.copy()
    swapped[0] = 1
    assert knn_accuracy_2d(a, swapped, k=3) == pytest.approx(19 / 20)
    with pytest.raises(UserInputError, match="labels"):
        knn_accuracy_2d(a, labels[:5])


def test_embedding_image(digit_features: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
    _, labels, images = digit_features
    rng = np.random.default_rng(1)
    xy = rng.normal(size=(60, 2))
    im = embedding_image(xy, images[:60], size=400, labels=labels[:60], classes=list("0123456789"))
    assert isinstance(im, Image.Image) and im.mode == "RGB" and max(im.size) <= 440
    cells = grid_snap(xy)
    grid = embedding_image(cells, list(images[:60]), size=400, grid=True)
    cols, rows = grid_shape(xy)
    assert grid.width > cols * 8 and grid.height > rows * 8
    with pytest.raises(UserInputError, match="share a grid cell"):
        embedding_image(np.zeros((2, 2)), images[:2], grid=True)
    with pytest.raises(UserInputError, match="thumbnails"):
        embedding_image(xy, images[:5])


def test_embedding_html_is_self_contained(
    digit_features: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> None:
    _, labels, images = digit_features
    n = 300
    xy = np.random.default_rng(2).normal(size=(n, 2))
    idents = [f"digits/{i}" for i in range(n)]
    page = embedding_html(
        xy, images[:n], labels[:n], title="t <test>", idents=idents, classes=list("0123456789")
    )
    assert page.startswith("<!doctype html>")
    assert not re.search(r"https?://", page), "no external URLs"
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", page)
    assert "<title>t &lt;test&gt;</title>" in page
    m = re.search(r'<script type="application/json" id="convscope-map-data">(.*?)</script>', page)
    assert m is not None
    data = json.loads(m.group(1))
    assert data["n"] == n and len(data["x"]) == n and len(data["y"]) == n
    assert data["labels"] == labels[:n].tolist() and data["idents"] == idents
    assert all(s.startswith("data:image/") for s in data["sheets"])
    assert min(data["x"]) == 0.0 and max(max(data["x"]), max(data["y"])) == 1.0
