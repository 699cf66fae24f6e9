"""Occlusion speed: EfficientNet-Lite0 at 224 px, window 16, stride 8 (729 masks) on the
bundled `coffee` sample, explaining its top class.

Compares `occlusion_map`'s engine ("exact" and "fast", and "exact" without skipping work, i.e.
batched channels-last whole forwards only) against the straightforward loop (one float32
forward per mask position, batch 1, with the model as loaded), interleaved so drift hits all
alike, and prints: the ratio loop / ours (goal ≥ 3× for exact, with maps equal within 1e-5),
the max abs difference of the maps, ms per masked image, and the best plain forward found
(batch 1/4/8/16 × channels-last × float32/bfloat16) in ms per image — the cost of the masked
images if each still had to be run whole.

Wall times (what a user waits) and CPU times of this process (less sensitive to other jobs on a
shared machine) are both shown.

    python bench/occlusion.py [--repeats 3] [--threads N] [--batch 16] [--sample coffee]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from convscope import load_model
from convscope.attribute import occlusion as occ
from convscope.attribute.targets import ClassTarget
from convscope.data.samples import load_sample


def timed(fn: Callable[[], Tensor]) -> tuple[float, float, Tensor]:
    """(wall seconds, CPU seconds of this process, result)."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


def plain_forward_search(
    model: torch.nn.Module, image: Tensor, repeats: int, bf16_native: bool
) -> list[tuple[str, float, float]]:
    """(setting, median wall ms/image, median CPU ms/image) for each plain-forward setting."""
    nets = {False: model, True: copy.deepcopy(model).to(memory_format=torch.channels_last)}
    settings = list(itertools.product((1, 4, 8, 16), (False, True), (False, True)))
    walls: dict[tuple[int, bool, bool], list[float]] = {s: [] for s in settings}
    cpus: dict[tuple[int, bool, bool], list[float]] = {s: [] for s in settings}
    for rep in range(repeats):
        for batch, cl, bf16 in settings:
            if bf16 and not bf16_native and rep >= 1:
                continue  # reference kernels: slow and steady, one timing is enough
            x = image.expand(batch, -1, -1, -1).clone()
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
            with torch.inference_mode(), ctx:
                if rep == 0:
                    nets[cl](x)  # warm-up
                w, c, _ = timed(lambda x=x, cl=cl: nets[cl](x))  # type: ignore[misc]
            walls[batch, cl, bf16].append(w / batch)
            cpus[batch, cl, bf16].append(c / batch)
    rows = []
    for batch, cl, bf16 in settings:
        name = f"batch {batch:2d}, {'channels-last' if cl else 'NCHW         '}, "
        name += "bf16" if bf16 else "fp32"
        key = (batch, cl, bf16)
        rows.append((name, statistics.median(walls[key]) * 1e3, statistics.median(cpus[key]) * 1e3))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared 2-core machine two OpenMP threads spin-wait "
        "for each other and every forward gets erratically slow; 0 = torch's default)",
    )
    ap.add_argument("--batch", type=int, default=None, help="masks per forward (default: ours)")
    ap.add_argument("--sample", default="coffee")
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--stride", type=int, default=8)
    ap.add_argument("--skip-plain", action="store_true", help="skip the plain-forward search")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = load_model("efficientnet_lite0")
    image = model.preprocess.geometry(load_sample(args.sample).unsqueeze(0)).float()
    with torch.inference_mode():
        top = int(model(model.preprocess.normalize(image)).argmax())
    targets = [ClassTarget(top)]
    h, w = int(image.shape[-2]), int(image.shape[-1])
    n_masks = len(occ._positions(h, w, args.window, args.stride))
    batch = args.batch or occ.BATCH_SIZE
    whole = occ.WHOLE_BATCH_SIZE
    bf16_native = occ._fast_dtype(torch.device("cpu")) is not None
    opts = {"window": args.window, "stride": args.stride}

    runs: dict[str, Callable[[], Tensor]] = {
        "loop (batch 1, fp32, as loaded)": lambda: occ._occlusion_loop(
            model, image, targets, **opts
        ),
        "ours, exact, no skipping": lambda: occ._occlusion(
            model, image, targets, batch_size=whole, incremental=False, **opts
        ),
        "ours, exact": lambda: occ._occlusion(model, image, targets, batch_size=batch, **opts),
        "ours, fast": lambda: occ._occlusion(
            model, image, targets, batch_size=batch, mode="fast", **opts
        ),
    }
    walls: dict[str, list[float]] = {k: [] for k in runs}
    cpus: dict[str, list[float]] = {k: [] for k in runs}
    maps: dict[str, Tensor] = {}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            wall, cpu, out = timed(fn)
            walls[name].append(wall)
            cpus[name].append(cpu)
            maps.setdefault(name, out)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"efficientnet_lite0 @ {h}×{w}, '{args.sample}' → class {top} "
        f"({model.classes[top] if model.classes else top}), window {args.window}, "
        f"stride {args.stride}: {n_masks} masks"
    )
    print(
        f"{torch.get_num_threads()} threads, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"native bf16: {bf16_native}, load average {load:.1f}; ours: batch {batch} "
        f"(whole-image forwards: {whole}), "
        f"medians of {args.repeats}"
    )
    base = "loop (batch 1, fp32, as loaded)"
    bw, bc = statistics.median(walls[base]), statistics.median(cpus[base])
    head = f"{'wall s':>8s} {'ms/mask':>8s} {'ratio':>6s}   {'CPU s':>7s} {'ms/mask':>8s}"
    print(f"{'':34s} {head} {'ratio':>6s}   max |Δ| vs loop")
    for name in runs:
        mw, mc = statistics.median(walls[name]), statistics.median(cpus[name])
        diff = float((maps[name] - maps[base]).abs().max())
        print(
            f"{name:34s} {mw:8.1f} {mw / n_masks * 1e3:8.2f} {bw / mw:6.2f}×  "
            f"{mc:7.1f} {mc / n_masks * 1e3:8.2f} {bc / mc:6.2f}×   {diff:.2e}"
        )
    print("(goal: exact ≥ 3× with max |Δ| ≤ 1e-5; fast within", occ.FAST_TOLERANCE, ")")

    if args.skip_plain:
        return
    rows = plain_forward_search(model.module, image, args.repeats + 2, bf16_native)
    print("\nplain forward of whole images (the cost if every masked image ran whole):")
    for name, mw, mc in rows:
        print(f"  {name}: {mw:8.2f} ms/image wall, {mc:8.2f} ms/image CPU")
    best = min(rows, key=lambda r: r[1])
    print(f"best plain forward: {best[0]}: {best[1]:.2f} ms/image wall, {best[2]:.2f} CPU")
    ew = statistics.median(walls["ours, exact"]) / n_masks * 1e3
    fw = statistics.median(walls["ours, fast"]) / n_masks * 1e3
    print(f"ours per masked image: exact {ew:.2f} ms, fast {fw:.2f} ms (wall)")


if __name__ == "__main__":
    main()
