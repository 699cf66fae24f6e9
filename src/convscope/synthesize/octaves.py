"""Multi-scale optimization as a wrapper around the one loop: run it on a small version of the
image first, then on larger ones, carrying the result up.

    image = octaves(image, run, octaves=4, scale=1.4)   # DeepDream's schedule

`run(image, index)` optimizes one octave's image and returns it. With `carry="detail"` (google/
deepdream), each octave starts from the original image at that size plus the detail the
smaller octaves added, upsampled; with `carry="result"` (multi-resolution style transfer),
from the smaller octave's result, upsampled.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch.nn.functional as F
from torch import Tensor

from convscope.errors import UserInputError

__all__ = ["octave_sizes", "octaves", "resize", "resize_optimizer_state"]


def octave_sizes(
    size: tuple[int, int], *, octaves: int, scale: float, min_side: int = 16
) -> list[tuple[int, int]]:
    """The (H, W) of each octave, smallest first, the last equal to `size`: each octave
    `scale` times smaller than the next. Octaves whose short side would fall below `min_side`
    are left out."""
    if isinstance(octaves, bool) or not isinstance(octaves, int) or octaves < 1:
        raise UserInputError(f"octaves must be at least 1, got {octaves!r}.")
    if not (math.isfinite(scale) and scale > 1.0):
        raise UserInputError(f"the octave scale must be a number above 1, got {scale}.")
    h, w = size
    sizes = []
    for k in range(octaves - 1, -1, -1):
        f = scale**k
        s = (max(1, round(h / f)), max(1, round(w / f)))
        if k == 0 or min(s) >= min_side:
            sizes.append(s)
    return sizes


def resize(image: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, C, H, W) → (B, C, *size), bilinear (antialiased when shrinking)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    shrink = size[0] < image.shape[-2] or size[1] < image.shape[-1]
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def octaves(
    image: Tensor,
    run: Callable[[Tensor, int], Tensor],
    *,
    octaves: int = 4,
    scale: float = 1.4,
    carry: Literal["detail", "result"] = "detail",
    min_side: int = 16,
) -> Tensor:
    """Optimize `image` (B, 3, H, W) coarse to fine (see the module docstring); returns the
    last octave's result at the image's size."""
    if image.dim() != 4:
        raise UserInputError(f"octaves take (B, C, H, W) images, got {tuple(image.shape)}.")
    if carry not in ("detail", "result"):
        raise UserInputError(f"carry must be 'detail' or 'result', got {carry!r}.")
    sizes = octave_sizes(
        (int(image.shape[-2]), int(image.shape[-1])),
        octaves=octaves,
        scale=scale,
        min_side=min_side,
    )
    result: Tensor | None = None
    detail: Tensor | None = None
    for k, size in enumerate(sizes):
        base = resize(image, size)
        if carry == "detail":
            start = base if detail is None else base + resize(detail, size)
        else:
            start = base if result is None else resize(result, size)
        result = run(start, k)
        detail = result - base
    assert result is not None
    return result


def resize_optimizer_state(state: Mapping[str, Any], size: tuple[int, int]) -> dict[str, Any]:
    """Adam's `state_dict` for an image (B, 3, h, w) → one for the same image at `size`, to
    warm-start the next scale (as crowsonkb/style-transfer-pytorch does): the moments are
    resized bilinearly. The losses average over positions, so a pixel's gradient shrinks with
    the number of pixels; the first moment is scaled by the ratio of the areas and the second
    by its square, so that Adam's first steps at the new scale are as large as its last ones
    at the old. Step counts are kept. The caller's state is not changed."""
    out = copy.deepcopy(dict(state))
    for entry in out.get("state", {}).values():
        if "exp_avg" not in entry or "exp_avg_sq" not in entry:
            raise UserInputError("only Adam's state can be carried to the next scale.")
        old = entry["exp_avg"]
        if old.dim() != 4:
            continue
        ratio = (old.shape[-2] * old.shape[-1]) / (size[0] * size[1])
        entry["exp_avg"] = resize(old, size) * ratio
        for key in ("exp_avg_sq", "max_exp_avg_sq"):
            if key in entry:
                entry[key] = resize(entry[key], size).clamp(min=0.0) * ratio**2
    return out
