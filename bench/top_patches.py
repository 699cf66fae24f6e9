"""Top-patches scan speed: one streaming pass over ≥ 500 images at 224 px keeping the top-k
of every channel of VGG16 relu4_3, against the fastest plain forward to relu4_3 over the same
(already preprocessed) images. Goal: ratio ≤ 1.15.

The baseline's batch size, memory format and precision are searched on a few images first;
the scan is then run with the same settings (they are open to it too). Images: the built-in
`sample-crops` set (random 256 px crops and flips of the bundled photos), held in memory.

    python bench/top_patches.py [--images 500] [--k 9]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import time

import torch
from torch import nn

from convscope import load_model
from convscope.data.datasets import SampleCrops
from convscope.inspect.scan import scan_top_activations


def forward_all(net: nn.Module, xs: torch.Tensor, batch: int, cl: bool, bf16: bool) -> float:
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    t = time.perf_counter()
    with torch.inference_mode(), ctx:
        for i in range(0, len(xs), batch):
            x = xs[i : i + batch]
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            net(x)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--k", type=int, default=9)
    ap.add_argument(
        "--search", type=int, default=16, help="images used to pick the config (0: skip)"
    )
    args = ap.parse_args()

    model = load_model("vgg16")
    data = SampleCrops(args.images, size=256)
    xs = torch.stack([model.preprocess(data[i].image)[0] for i in range(len(data))])
    upto = int(model.resolve("relu4_3").split(".")[-1])
    trunk = nn.Sequential(*list(model.module.features)[: upto + 1]).eval()  # to relu4_3

    results = {}
    grid = list(itertools.product((1, 4, 8), (False, True), (False, True)))
    if args.search == 0:  # skip the search: the best configuration found on this CPU
        grid = [(4, True, False)]  # fp32: bf16 is only faster on CPUs with AVX512-BF16
    for batch, cl, bf16 in grid:
        trunk.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
        forward_all(trunk, xs[:4], batch, cl, bf16)  # warm up
        results[(batch, cl, bf16)] = forward_all(trunk, xs[: max(args.search, 4)], batch, cl, bf16)
    batch, cl, bf16 = min(results, key=lambda c: results[c])
    print("config search (s for", args.search, "images):")
    for (b, c, f), sec in sorted(results.items(), key=lambda kv: kv[1]):
        print(f"  batch {b:2d}  {'channels_last' if c else 'contiguous   '}  "
              f"{'bf16' if f else 'fp32'}  {sec:6.2f}")  # fmt: skip
    trunk.to(memory_format=torch.channels_last if cl else torch.contiguous_format)

    base = forward_all(trunk, xs, batch, cl, bf16)
    trunk.to(memory_format=torch.contiguous_format)
    t = time.perf_counter()
    top = scan_top_activations(
        model, data, "relu4_3", k=args.k, batch_size=batch,
        precision="bf16" if bf16 else "fp32", channels_last=cl,
    )  # fmt: skip
    scan = time.perf_counter() - t
    n = len(data)
    print(f"\nvgg16 relu4_3, {n} images at 224, all {top.values.shape[0]} channels, k={args.k}")
    print(f"best plain forward (batch {batch}, {'channels_last' if cl else 'contiguous'}, "
          f"{'bf16' if bf16 else 'fp32'}): {base:6.1f} s  ({n / base:5.1f} img/s)")  # fmt: skip
    print(f"top-patches scan, same settings:       {scan:6.1f} s  ({n / scan:5.1f} img/s)")
    print(f"ratio scan / plain forward: {scan / base:.3f}   (goal ≤ 1.15)")


if __name__ == "__main__":
    main()
