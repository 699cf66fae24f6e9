"""Activation maps: capture a layer's channels, tile them with explicit scaling, overlay one.

How the maps are scaled changes what a viewer sees: per-channel scaling stretches every channel
to its own min..max (the pattern inside each channel is visible, a weak channel looks as bright
as a strong one); shared scaling uses one min..max for all shown channels (strong channels
stand out, weak ones go dark). `activation_grid` always writes the scaling into the picture.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from convscope.errors import UserInputError
from convscope.models.base import ConvModel, check_image_batch
from convscope.probe import capture
from convscope.render.grids import image_grid, titled
from convscope.render.maps import Scaling, channel_tiles, colorize

__all__ = [
    "activation_grid",
    "activation_maps",
    "activation_overlay",
    "channel_spec",
    "channel_tiles",
    "overlay_figure",
    "parse_channels",
    "scaling_caption",
    "strongest_channels",
]

_TARGET_TILE = 112  # pixels; small maps are enlarged by a whole factor to about this size
_PART = re.compile(r"^(\d+)(?:-(\d+))?$")


def _for_layer(layer: str | None) -> str:
    return f" for layer {layer}" if layer else ""


def _layer_name(layer: str | None) -> str:
    return f"layer {layer}" if layer else "the layer"


def parse_channels(spec: str, n: int, *, layer: str | None = None) -> list[int]:
    """A channel list such as "all", "0-63" or "3,5,9-12" → channel indices, in order given.

    Ranges include both ends; repeats are dropped (the first stays); spaces are ignored. `n` is
    the layer's channel count; `layer` only names the layer in error messages.
    """
    if not isinstance(spec, str):
        raise UserInputError(f"channels must be given as text like '0-63', not {spec!r}.")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserInputError(f"{_layer_name(layer)} has no channels to choose from.")
    text = "".join(spec.split())
    if text.lower() == "all":
        return list(range(n))
    if not text:
        raise UserInputError(
            "the channel list is empty; give channels like '0-63', '3,5,9-12' or 'all'."
        )
    out: dict[int, None] = {}
    for part in text.split(","):
        m = _PART.match(part)
        if m is None:
            raise UserInputError(
                f"cannot read {part!r} in the channel list {spec!r}; "
                "give channels like '0-63', '3,5,9-12' or 'all'."
            )
        lo = int(m.group(1))
        hi = lo if m.group(2) is None else int(m.group(2))
        if hi < lo:
            raise UserInputError(
                f"the channel range {part!r} runs backwards; write it as '{hi}-{lo}'."
            )
        for c in (lo, hi):
            if c >= n:
                raise UserInputError(f"channel {c} is out of range 0..{n - 1}{_for_layer(layer)}.")
        out.update(dict.fromkeys(range(lo, hi + 1)))
    return list(out)


def channel_spec(channels: Sequence[int]) -> str:
    """Channel indices → the shortest spec `parse_channels` reads back ("0-3,7,9-10")."""
    parts: list[str] = []
    items = list(channels)
    k = 0
    while k < len(items):
        start = end = items[k]
        while k + 1 < len(items) and items[k + 1] == end + 1:
            k += 1
            end = items[k]
        parts.append(str(start) if start == end else f"{start}-{end}")
        k += 1
    return ",".join(parts)


def activation_maps(model: ConvModel | nn.Module, image: Tensor, layer: str) -> Tensor:
    """The (C, h, w) activations of `layer` (alias or dotted name) for one image, on the CPU.

    `image` is a (3, H, W) RGB tensor in [0, 1]; a `ConvModel` applies its own preprocessing
    (resize, crop, normalization), a bare `nn.Module` gets the image as is.
    """
    batch = check_image_batch(image, "the image")
    if batch.shape[0] != 1:
        raise UserInputError(f"activation_maps takes one image, got a batch of {batch.shape[0]}.")
    if isinstance(model, ConvModel):
        x = model.prepare(batch)
    else:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        x = batch.to(device)
    act = capture(model, x, [layer])[layer]
    if act.dim() != 4:
        raise UserInputError(
            f"layer {layer} outputs shape {tuple(act.shape)}, not a stack of 2-D maps; "
            "pick a convolutional layer."
        )
    return act[0].detach().float().cpu()


def strongest_channels(act: Tensor, k: int = 1, channels: Sequence[int] | None = None) -> list[int]:
    """The `k` channels of (C, h, w) `act` with the highest mean, strongest first (among
    `channels` when given)."""
    if act.dim() != 3:
        raise UserInputError(f"activations must have shape (C, H, W), got {tuple(act.shape)}.")
    if k < 1:
        raise UserInputError(f"k must be at least 1, got {k}.")
    pool = list(range(act.shape[0])) if channels is None else list(channels)
    bad = [c for c in pool if not 0 <= c < act.shape[0]]
    if bad:
        raise UserInputError(f"channel {bad[0]} is out of range 0..{act.shape[0] - 1}.")
    if not pool:
        raise UserInputError("no channels to choose from.")
    means = act.detach().float().mean(dim=(1, 2))[pool]
    order = means.argsort(descending=True, stable=True)[:k].tolist()
    return [pool[i] for i in order]


def _map_tile(h: int, w: int) -> int:
    """A tile side: small maps grow by a whole factor to about 112 px, large ones shrink."""
    side = max(h, w)
    return side * max(1, round(_TARGET_TILE / side)) if side <= _TARGET_TILE else _TARGET_TILE


def _num(v: float) -> str:
    """A short, plain number for a caption: 0, 0.0123, 41.5, 5214."""
    if v == 0:
        return "0"
    if 1e-3 <= abs(v) < 1e6:
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    return f"{v:.3g}"


def scaling_caption(
    act: Tensor, channels: Sequence[int] | None = None, scaling: Scaling = "channel"
) -> str:
    """The caption `activation_grid` writes: which scaling, and for shared scaling its range."""
    if scaling not in ("channel", "shared"):
        raise UserInputError(f"scaling must be 'channel' or 'shared', got {scaling!r}.")
    if channels is None:
        channels = range(act.shape[0])
    if scaling == "channel":
        return "per-channel scaling: each map stretched to its own min..max"
    x = act.detach()[list(channels)].float()
    return f"shared scaling: min..max = {_num(float(x.min()))}..{_num(float(x.max()))}"


def activation_grid(
    act: Tensor,
    *,
    channels: Sequence[int] | None = None,
    scaling: Scaling = "channel",
    ncol: int | None = None,
    tile: int | None = None,
    title: str | None = None,
) -> Image.Image:
    """(C, h, w) activations → a labelled grid ("ch N") of grayscale maps (white = high).

    The picture always states its scaling below the optional `title`: "per-channel scaling"
    or "shared scaling: min..max = a..b". A constant map is black. Small maps are enlarged
    by a whole factor (nearest neighbour) so that every activation is an equal square.
    """
    tiles = channel_tiles(act, channels=channels, scaling=scaling)  # validates all three
    shown = list(range(act.shape[0])) if channels is None else list(channels)
    if ncol is None:
        ncol = min(8, math.ceil(math.sqrt(len(shown))))
    h, w = int(act.shape[1]), int(act.shape[2])
    grid = image_grid(
        tiles,
        ncol=ncol,
        tile=_map_tile(h, w) if tile is None else tile,
        labels=[f"ch {c}" for c in shown],
    )
    width = max(grid.width, 360)
    if grid.width < width:  # room for the captions above a narrow grid
        wide = Image.new("RGB", (width, grid.height), (255, 255, 255))
        wide.paste(grid, ((width - grid.width) // 2, 0))
        grid = wide
    out = titled(grid, scaling_caption(act, shown, scaling), height=22)
    return titled(out, title, height=28) if title else out


def activation_overlay(
    image: Tensor,
    act_channel: Tensor,
    *,
    alpha: float = 0.5,
    cmap: str = "inferno",
) -> Tensor:
    """One channel's (h, w) map over the (3, H, W) image in [0, 1] → (3, H, W) in [0, 1].

    The map is upsampled bilinearly to the image, stretched to its own min..max (a constant map
    becomes 0), coloured with `cmap` and blended: `(1 - alpha) * image + alpha * colour`. Pass
    the image as the model saw it (after `model.preprocess.geometry`), so the map lines up.
    """
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise UserInputError(f"the image must have shape (3, H, W), got {shape}.")
    if not isinstance(act_channel, Tensor) or act_channel.dim() != 2:
        shape = tuple(act_channel.shape) if isinstance(act_channel, Tensor) else "not a tensor"
        raise UserInputError(f"the activation map must have shape (h, w), got {shape}.")
    if not 0.0 <= alpha <= 1.0:
        raise UserInputError(f"alpha must be between 0 and 1, got {alpha}.")
    img = image.detach().float().cpu().clamp(0.0, 1.0)
    H, W = int(img.shape[1]), int(img.shape[2])
    a = act_channel.detach().float().cpu()[None, None]  # (1, 1, h, w)
    up = F.interpolate(a, size=(H, W), mode="bilinear", align_corners=False)[0, 0]
    lo, hi = up.min(), up.max()
    norm = (up - lo) / (hi - lo) if hi > lo else torch.zeros_like(up)
    heat = colorize(norm, cmap)  # (3, H, W)
    return ((1.0 - alpha) * img + alpha * heat).clamp(0.0, 1.0)


def _overlay_tile(height: int, width: int) -> int:
    """Tile side for an overlay figure: whole-factor enlargement of small images, ≤ 512."""
    side = max(height, width)
    if side >= 224:
        return min(side, 512)
    return side * math.ceil(224 / side)


def overlay_figure(
    seen: Tensor,
    act: Tensor,
    channels: Sequence[int],
    *,
    title: str,
    notes: Sequence[str] | None = None,
) -> Image.Image:
    """The image as the model saw it (3, H, W), then each of `channels` of `act` (C, h, w)
    upsampled over it (`activation_overlay`), labelled "ch N" plus its note, in one row."""
    notes = [""] * len(channels) if notes is None else list(notes)
    if len(notes) != len(channels):
        raise UserInputError(f"got {len(notes)} notes for {len(channels)} channels.")
    h, w = int(seen.shape[1]), int(seen.shape[2])
    pictures = [seen, *(activation_overlay(seen, act[c]) for c in channels)]
    labels = [f"input {w}x{h}", *(f"ch {c}{note}" for c, note in zip(channels, notes, strict=True))]
    grid = image_grid(pictures, labels=labels, tile=_overlay_tile(h, w), ncol=len(pictures))
    return titled(grid, title, height=28)
