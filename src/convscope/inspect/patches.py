"""Maximally activating patches: crop each top-k location's exact receptive field out of the
image the model saw, draw the part that falls outside the image (padding) as a hatch, and
optionally show the guided-backprop image of the same neuron beside it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor

from convscope.data.datasets import ImageDataset
from convscope.errors import UserInputError
from convscope.inspect.scan import TopK
from convscope.models.base import ConvModel
from convscope.probe import Probe, ReceptiveField, receptive_fields
from convscope.render.grids import image_grid, titled
from convscope.render.heatmaps import signed_gradient_image

__all__ = [
    "PatchEntry",
    "crop_patch",
    "guided_crop",
    "guided_patches",
    "hatch",
    "top_patches_figure",
]


@dataclass(frozen=True)
class PatchEntry:
    channel: int
    image: int  # dataset index
    y: int
    x: int
    value: float


def crop_patch(image: Tensor, box: tuple[int, int, int, int]) -> tuple[Tensor, Tensor]:
    """Crop (3, H, W) to `box` = (top, left, bottom, right), which may reach outside the image.
    Returns the (3, h, w) patch (zeros outside) and an (h, w) mask of pixels inside."""
    if image.dim() != 3:
        raise UserInputError(f"image must be (C, H, W), got {tuple(image.shape)}.")
    top, left, bottom, right = box
    if bottom <= top or right <= left:
        raise UserInputError(f"empty crop box {box}.")
    _, h, w = image.shape
    patch = image.new_zeros(image.shape[0], bottom - top, right - left)
    mask = torch.zeros(bottom - top, right - left, dtype=torch.bool)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(bottom, h), min(right, w)
    if y1 > y0 and x1 > x0:
        patch[:, y0 - top : y1 - top, x0 - left : x1 - left] = image[:, y0:y1, x0:x1]
        mask[y0 - top : y1 - top, x0 - left : x1 - left] = True
    return patch, mask


def hatch(patch: Tensor, mask: Tensor, *, period: int = 6) -> Tensor:
    """Draw the padding (where `mask` is False) as light diagonal stripes, so it cannot be
    mistaken for image content. Returns a new tensor."""
    h, w = mask.shape
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    stripes = ((yy + xx) // max(1, period // 2)) % 2 == 0
    pad = torch.where(stripes, torch.tensor(0.85), torch.tensor(0.65)).to(patch.dtype)
    return torch.where(mask, patch, pad.expand_as(patch))


def guided_crop(grad: Tensor, box: tuple[int, int, int, int]) -> Tensor:
    """One patch's guided-backprop image: the (3, H, W) gradient cropped to `box`, shown
    signed (zero is mid-gray) and scaled on its own part inside the image, to the 99.5th
    percentile of its magnitudes (`signed_gradient_image`: the maximum would leave it flat
    gray), with the padding beyond the border hatched."""
    gpatch, mask = crop_patch(grad, box)  # (3, h, w), (h, w)
    guided = torch.full_like(gpatch, 0.5)
    if bool(mask.any()):
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        guided[:, r0:r1, c0:c1] = signed_gradient_image(gpatch[:, r0:r1, c0:c1])
    return hatch(guided, mask)


def _entries(top: TopK, channels: Sequence[int]) -> list[list[PatchEntry]]:
    rows = []
    for c in channels:
        row = []
        for j in range(top.k):
            img = int(top.images[c, j])
            if img < 0:
                continue
            row.append(
                PatchEntry(c, img, int(top.ys[c, j]), int(top.xs[c, j]), float(top.values[c, j]))
            )
        rows.append(row)
    return rows


def guided_patches(
    model: ConvModel,
    images: Sequence[Tensor],
    layer: str,
    entries: Sequence[PatchEntry],
    *,
    batch_size: int = 8,
) -> list[Tensor]:
    """Guided backprop (Springenberg et al. 2015) of each entry's neuron with respect to the
    image in [0, 1] (as the model saw it, after its geometry). `images[i]` belongs to
    `entries[i]`. Returns one (3, H, W) gradient per entry."""
    dotted = model.resolve(layer)
    out: list[Tensor] = []
    for start in range(0, len(entries), batch_size):
        chunk = entries[start : start + batch_size]
        x = torch.stack([images[start + i] for i in range(len(chunk))]).to(model.device)
        x = x.detach().requires_grad_(True)  # (B, 3, H, W) in [0, 1]
        probe = Probe(model, [dotted], detach=False, relu_rule="guided", stop_early=True)
        with probe:
            probe.run(model.preprocess.normalize(x))
            act = probe.activations[dotted]  # (B, C, h, w)
            score = sum(act[i, e.channel, e.y, e.x] for i, e in enumerate(chunk))
            assert isinstance(score, Tensor)
            (grad,) = torch.autograd.grad(score, x)
        out.extend(g.detach().cpu() for g in grad)
    return out


def top_patches_figure(
    model: ConvModel,
    dataset: ImageDataset,
    layer: str,
    top: TopK,
    channels: Sequence[int],
    *,
    guided: bool = False,
    tile: int = 96,
    rf: ReceptiveField | None = None,
) -> Image.Image:
    """One row per channel with its k patches (and guided-backprop images beside them)."""
    bad = [c for c in channels if not 0 <= c < top.values.shape[0]]
    if bad:
        raise UserInputError(
            f"channel {bad[0]} is out of range 0..{top.values.shape[0] - 1} for layer {layer}."
        )
    if rf is None:
        size = model.preprocess.crop or 224
        rf = receptive_fields(model, [layer], size)[layer]
    if rf is None:
        raise UserInputError(f"layer {layer} has no spatial receptive field.")
    rows = _entries(top, channels)
    needed = sorted({e.image for row in rows for e in row})
    seen: dict[int, Tensor] = {
        i: model.preprocess.geometry(dataset[i].image) for i in needed
    }  # (3, H, W) in [0, 1]
    flat = [e for row in rows for e in row]
    grads = guided_patches(model, [seen[e.image] for e in flat], layer, flat) if guided else []
    tiles: list[Tensor] = []
    labels: list[str] = []
    g_iter = iter(grads)
    for row in rows:
        for j, e in enumerate(row):
            box = rf.box(e.y, e.x)
            patch, mask = crop_patch(seen[e.image], box)
            tiles.append(hatch(patch, mask))
            labels.append(f"ch {e.channel} · {e.value:.3g}" if j == 0 else f"{e.value:.3g}")
            if guided:
                tiles.append(guided_crop(next(g_iter), box))
                labels.append("guided")
        missing = top.k - len(row)
        for _ in range(missing * (2 if guided else 1)):
            tiles.append(torch.ones(3, 8, 8))
            labels.append("")
    ncol = top.k * (2 if guided else 1)
    grid = image_grid(tiles, ncol=ncol, labels=labels, tile=tile)
    name = model.alias_of(model.resolve(layer)) or layer
    title = (
        f"{model.name} · {name} · top {top.k} of {top.seen} images · "
        f"receptive field {rf.size[0]} px, stride {rf.stride[0]}"
    )
    return titled(grid, title)
