"""Turn activation maps into displayable tiles: explicit scaling, colour maps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from convscope.errors import UserInputError

__all__ = ["Scaling", "channel_tiles", "colorize"]

Scaling = Literal["channel", "shared"]


def channel_tiles(
    act: Tensor,
    *,
    channels: Sequence[int] | None = None,
    scaling: Scaling = "channel",
) -> Tensor:
    """(C, H, W) activations → (N, 1, H, W) tiles in [0, 1].

    `scaling="channel"` stretches each channel's own min..max to 0..1 (shows the pattern inside
    every channel); `"shared"` uses one min..max for all shown channels (shows which channels
    are strong). A constant channel becomes 0.
    """
    if act.dim() != 3:
        raise UserInputError(f"activations must have shape (C, H, W), got {tuple(act.shape)}.")
    c = act.shape[0]
    idx = list(range(c)) if channels is None else list(channels)
    bad = [i for i in idx if not 0 <= i < c]
    if bad:
        raise UserInputError(f"channel {bad[0]} is out of range 0..{c - 1}.")
    if scaling not in ("channel", "shared"):
        raise UserInputError(f"scaling must be 'channel' or 'shared', got {scaling!r}.")
    x = act.detach()[idx].float()  # (N, H, W)
    if scaling == "channel":
        lo = x.amin(dim=(1, 2), keepdim=True)
        hi = x.amax(dim=(1, 2), keepdim=True)
    else:
        lo, hi = x.min(), x.max()
    span = hi - lo
    tiles = torch.where(span > 0, (x - lo) / span.clamp_min(1e-12), torch.zeros_like(x))
    return tiles.unsqueeze(1)  # (N, 1, H, W)


def colorize(values: Tensor, cmap: str = "viridis") -> Tensor:
    """(H, W) values in [0, 1] → (3, H, W) RGB through a matplotlib colour map."""
    if values.dim() != 2:
        raise UserInputError(f"a map must have shape (H, W), got {tuple(values.shape)}.")
    import matplotlib

    try:
        cm = matplotlib.colormaps[cmap]
    except KeyError:
        raise UserInputError(f"unknown colour map {cmap!r}.") from None
    rgba = cm(values.detach().float().clamp(0, 1).cpu().numpy())  # (H, W, 4)
    return torch.from_numpy(rgba[..., :3]).permute(2, 0, 1).float()
