"""One channel's top dataset patches for its atlas page: each patch (the unit's exact
receptive field, padding hatched, as `convscope top-patches` draws it) beside its
guided-backprop image, as one picture per patch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from convscope.data.datasets import ImageDataset
from convscope.inspect.patches import PatchEntry, crop_patch, guided_crop, guided_patches, hatch
from convscope.inspect.scan import TopK
from convscope.models.base import ConvModel
from convscope.probe import ReceptiveField

__all__ = ["channel_entries", "channel_patches"]

GAP = 4  # pixels between a patch and its guided-backprop image


def channel_entries(top: TopK, c: int) -> list[PatchEntry]:
    """Channel `c`'s filled slots of the top-k table, best first."""
    return [
        PatchEntry(
            c, int(top.images[c, j]), int(top.ys[c, j]), int(top.xs[c, j]), float(top.values[c, j])
        )
        for j in range(top.k)
        if int(top.images[c, j]) >= 0
    ]


def _fit(t: Tensor, tile: int) -> Tensor:
    """(3, h, w) shrunk to fit `tile` (area filter); smaller patches stay as they are (the
    page enlarges them with crisp pixels)."""
    h, w = int(t.shape[-2]), int(t.shape[-1])
    if max(h, w) <= tile:
        return t
    s = tile / max(h, w)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    return F.interpolate(t.unsqueeze(0), size=size, mode="area")[0]


def channel_patches(
    model: ConvModel,
    dataset: ImageDataset,
    layer: str,
    top: TopK,
    c: int,
    rf: ReceptiveField,
    *,
    tile: int = 128,
) -> list[Tensor]:
    """(3, h, 2·w + GAP) per top-k entry of channel `c`: the patch, then its guided backprop
    (zero is mid-gray; scaled to the 99.5th percentile of the patch's own magnitudes)."""
    entries = channel_entries(top, c)
    seen = [model.preprocess.geometry(dataset[e.image].image) for e in entries]  # (3, H, W)
    one_size = len({tuple(t.shape) for t in seen}) <= 1  # else: one image per backward
    grads = guided_patches(model, seen, layer, entries, batch_size=8 if one_size else 1)
    out = []
    for e, image, g in zip(entries, seen, grads, strict=True):
        box = rf.box(e.y, e.x)
        patch, mask = crop_patch(image, box)  # (3, h, w), (h, w)
        pair = [_fit(hatch(patch, mask), tile), _fit(guided_crop(g, box), tile)]
        gap = torch.full((3, pair[0].shape[1], GAP), 0.1)
        out.append(torch.cat([pair[0], gap, pair[1]], dim=2))
    return out
