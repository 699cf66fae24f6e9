"""The atlas's map of the dataset: a 2-D embedding (t-SNE by default) of the images' pooled
features at one layer, each image's nearest neighbours in that feature space, and the
thumbnails packed into sprite sheets for the page."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from convscope.atlas.store import write_if_changed
from convscope.data.datasets import ImageDataset
from convscope.events import ProgressCallback, no_progress
from convscope.inspect.embed import Method, embed_2d, grid_shape, grid_snap
from convscope.inspect.features import FeatureFile
from convscope.inspect.neighbors import drop_self, nearest
from convscope.models.base import Preprocess

__all__ = ["MAP_DATA", "build_map", "map_rows"]

MAP_DATA = "map/map.json"
"""The map's data, relative to the atlas folder; `map.html` inlines it."""

_SHEET = 4096  # a sprite sheet is at most this many pixels wide


def map_rows(n: int, points: int, seed: int) -> list[int]:
    """The feature-file rows the map shows: all `n`, or a random sorted subset of `points`."""
    if n <= points:
        return list(range(n))
    rng = np.random.default_rng(seed)
    return sorted(int(r) for r in rng.choice(n, size=points, replace=False))


def _thumbnail(image: torch.Tensor, side: int) -> Image.Image:
    """(3, H, W) in [0, 1] → a `side`×`side` center crop of the short side; small images grow
    with crisp (nearest) pixels."""
    small = min(image.shape[-2:]) < side
    geo = Preprocess(resize=side, crop=side, interpolation="nearest" if small else "bilinear")
    x = geo.geometry(image.unsqueeze(0))[0]  # (3, side, side)
    arr = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(arr), "RGB")


def _sheets(thumbs: Sequence[Image.Image], side: int, folder: Path) -> tuple[list[Path], int]:
    """Pack the thumbnails into sprite sheets `folder/sprites-K.png`; (paths, tiles per row)."""
    per_row = max(1, _SHEET // side)
    per_sheet = per_row * per_row
    paths = []
    for k, start in enumerate(range(0, len(thumbs), per_sheet)):
        chunk = thumbs[start : start + per_sheet]
        rows = math.ceil(len(chunk) / per_row)
        sheet = Image.new("RGB", (min(per_row, len(chunk)) * side, rows * side))
        for j, im in enumerate(chunk):
            r, c = divmod(j, per_row)
            sheet.paste(im, (c * side, r * side))
        buf = io.BytesIO()
        sheet.save(buf, format="PNG", optimize=True)
        path = folder / f"sprites-{k}.png"
        write_if_changed(path, buf.getvalue())
        paths.append(path)
    return paths, per_row


def build_map(
    ff: FeatureFile,
    dataset: ImageDataset,
    out: Path,
    *,
    points: int,
    neighbors: int,
    method: Method,
    perplexity: float,
    seed: int,
    thumb: int,
    on_progress: ProgressCallback = no_progress,
) -> list[Path]:
    """Write `out/map/map.json` and its sprite sheets; return the files written.

    The JSON holds, per shown image: its place (x, y in [0, 1], equal scales), dataset index,
    identity, label, and its `neighbors` nearest other shown images in feature space (L2)
    with their distances."""
    rows = map_rows(len(ff), points, seed)
    feats = ff.features[rows].float()  # (n, D)
    xy = embed_2d(feats, method=method, perplexity=perplexity, seed=seed, on_progress=on_progress)
    lo = xy.min(axis=0)
    span = float(np.ptp(xy, axis=0).max()) or 1.0
    unit = (xy - lo) / span  # (n, 2) in [0, 1], equal scales
    cols, rows_ = grid_shape(xy)
    cells = grid_snap(xy, shape=(cols, rows_))  # (n, 2) column, row: one image per cell
    side = max(cols, rows_)
    gx = (cells[:, 0] + 0.5 + (side - cols) / 2) / side  # (n,) cell centres, centred
    gy = (cells[:, 1] + 0.5 + (side - rows_) / 2) / side
    k = min(neighbors, len(rows) - 1)
    dist, ids = nearest(feats, feats, k + 1)  # (n, k + 1), the point itself among them
    hits = [drop_self(dist[j], ids[j], j, k) for j in range(len(rows))]
    index = [int(ff.indices[r]) for r in rows]
    thumbs = [_thumbnail(dataset[i].image, thumb) for i in index]
    folder = out / "map"
    folder.mkdir(exist_ok=True)
    sheets, per_row = _sheets(thumbs, thumb, folder)
    idents = ff.idents
    names = ff.label_names()
    data: dict[str, Any] = {
        "layer": ff.layer,
        "method": method,
        "count": len(rows),
        "of": len(ff),
        "x": [round(float(v), 5) for v in unit[:, 0]],
        "y": [round(float(v), 5) for v in unit[:, 1]],
        "gx": [round(float(v), 5) for v in gx],
        "gy": [round(float(v), 5) for v in gy],
        "gridSide": side,
        "index": index,
        "idents": [idents[r] for r in rows],
        "labels": [int(ff.labels[r]) for r in rows],
        "names": [names[r] for r in rows],
        "classes": ff.classes,
        "neighbors": [h[1] for h in hits],
        "distances": [[round(d, 4) for d in h[0]] for h in hits],
        "thumb": thumb,
        "perRow": per_row,
        "perSheet": per_row * per_row,
        "sheets": [p.name for p in sheets],
    }
    path = out / MAP_DATA
    write_if_changed(path, json.dumps(data, ensure_ascii=True, separators=(",", ":")))
    return [path, *sheets]
