"""Stylize images in one pass of a trained style network:

    net, info = load_net("starry.safetensors")
    [out] = stylize(net, [photo])                              # (3, H, W) in [0, 1]
    outs = stylize(net, photos, style=info.index("scream"), size=512, preserve_color=True)
    outs = stylize(net, photos, style=[0.3, 0.7, 0, 0])        # a blend, normalized to sum 1

Images of one size go through the network `batch` at a time, under `torch.inference_mode`;
the network's train/eval mode is restored afterwards and the caller's tensors are not
touched. `precision` "auto" runs the network under bfloat16 autocast where the device does
bfloat16 natively (2.1–2.5× faster than float32 at 512² on an AVX512-BF16 CPU; with trained
weights the pixels come within 0.02 of float32's on a 0–1 scale, 0.001 on average; the
tests allow 0.06), else in float32; "fp32" is exact. The exact float32 alternatives measured
by bench/stylenet.py are `torch.compile` (1.6–1.7×, after up to 30 s of compiling per size)
and onnxruntime on an export (`convscope.stylenet.export`, 1.2–1.5×); they pay off for videos and
folders, not for one image.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from convscope.errors import UserInputError, check_whole
from convscope.events import Progress, ProgressCallback, no_progress
from convscope.models.base import check_image_batch
from convscope.stylenet.net import MIN_SIDE, StyleChoice, TransformerNet
from convscope.synthesize.colors import original_colors
from convscope.synthesize.octaves import resize
from convscope.synthesize.recipes.style import choose_precision, output_size

__all__ = ["stylize"]


def _images(images: Tensor | Sequence[Tensor]) -> list[Tensor]:
    """(1, 3, H, W) each, float in [0, 1], detached copies on the CPU."""
    if isinstance(images, Tensor):
        batch = check_image_batch(images, "input image")
        return [batch[k : k + 1].detach().float().clamp(0.0, 1.0) for k in range(batch.shape[0])]
    out = []
    for k, image in enumerate(images):
        t = check_image_batch(image, f"input image {k + 1}")
        out += [t[j : j + 1].detach().float().clamp(0.0, 1.0) for j in range(t.shape[0])]
    if not out:
        raise UserInputError("there are no images to stylize.")
    return out


def _resized(x: Tensor, side: int) -> Tensor:
    hw = output_size((int(x.shape[-2]), int(x.shape[-1])), side)
    return resize(x, hw).clamp(0.0, 1.0)


def _groups(sizes: list[tuple[int, int]], batch: int) -> Iterator[list[int]]:
    """Indices of images of one size, at most `batch` at a time, in order of first seen."""
    by_size: dict[tuple[int, int], list[int]] = {}
    for k, hw in enumerate(sizes):
        by_size.setdefault(hw, []).append(k)
    for ks in by_size.values():
        for start in range(0, len(ks), batch):
            yield ks[start : start + batch]


def stylize(
    net: TransformerNet,
    images: Tensor | Sequence[Tensor],
    *,
    style: StyleChoice = None,
    size: int | None = None,
    preserve_color: bool = False,
    batch: int = 4,
    precision: str = "auto",
    on_progress: ProgressCallback = no_progress,
) -> list[Tensor]:
    """Each image (3, H, W) or (B, 3, H, W) in [0, 1], stylized: a list of (3, H, W) in
    [0, 1], in the inputs' order (see the module docstring)."""
    check_whole(batch, "--batch")
    bad_size = isinstance(size, bool) or not isinstance(size, int) or size < MIN_SIDE
    if size is not None and bad_size:
        raise UserInputError(f"--size must be at least {MIN_SIDE} pixels, got {size!r}.")
    inputs = _images(images)
    if size is not None:
        inputs = [_resized(x, size) for x in inputs]
    sizes = [(int(x.shape[-2]), int(x.shape[-1])) for x in inputs]
    small = [hw for hw in sizes if min(hw) < MIN_SIDE]
    if small:
        h, w = small[0]
        raise UserInputError(
            f"an input is {w}x{h}; the style network needs at least {MIN_SIDE} px a side."
        )
    device = next(net.parameters()).device
    bf16 = choose_precision(precision, device) == "bf16"
    results: list[Tensor | None] = [None] * len(inputs)
    was_training = net.training
    done = 0
    try:
        net.eval()
        with torch.inference_mode():
            for group in _groups(sizes, batch):
                x = torch.cat([inputs[k] for k in group]).to(device)  # (b, 3, H, W)
                with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                    y = net(x, style=style)
                y = y.float().clamp(0.0, 1.0).cpu()
                if preserve_color:
                    y = original_colors(y, x.cpu())
                for j, k in enumerate(group):
                    results[k] = y[j].clone()
                done += len(group)
                on_progress(Progress("stylize", done, len(inputs)))
    finally:
        net.train(was_training)
    return [r for r in results if r is not None]
