"""Probe overhead: a VGG16 forward at 224 with the probe capturing 5 layers, against the plain
forward pass (the physical limit). Goal: ratio ≤ 1.05.

    python bench/probe.py [--repeats 15] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from convscope import Probe, load_model

LAYERS = ["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()

    model = load_model("vgg16", device=args.device)
    x = torch.rand(1, 3, args.size, args.size, device=args.device)
    x = model.preprocess.normalize(x)
    probe = Probe(model, LAYERS)

    def plain() -> None:
        model(x)

    def probed() -> None:
        with probe:
            model(x)

    def timed(fn: object) -> float:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t

    with torch.inference_mode():
        for _ in range(3):  # warm up both paths
            plain()
            probed()
        base, ours = [], []
        for _ in range(args.repeats):  # interleaved, so drift hits both alike
            base.append(timed(plain))
            ours.append(timed(probed))
    b, o = statistics.median(base), statistics.median(ours)
    print(f"vgg16 @ {args.size}, batch 1, {args.device}, {torch.get_num_threads()} threads")
    print(f"plain forward            : {b * 1e3:8.1f} ms (median of {args.repeats})")
    print(f"forward + probe, 5 layers: {o * 1e3:8.1f} ms")
    print(f"ratio probe / plain      : {o / b:.3f}   (goal ≤ 1.05)")


if __name__ == "__main__":
    main()
