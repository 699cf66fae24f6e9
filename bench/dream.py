"""DeepDream speed and memory: a 4-octave dream (scale 1.4, 10 steps per octave, google/
deepdream's settings) of a 1024² image on VGG16 at relu4_3, with and without `--tile 512`.

Each setting runs in its own fresh Python process, so that its peak resident memory
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`) is its own; the resident memory after the model
is loaded (before any step) is shown too, and the difference is what the dream added. Prints
seconds per octave (wall), the total, and the memory, one row per setting. `--estimate` adds
the loop's own estimate for the largest octave (two calibration steps: bytes kept for the
backward pass, time per step).

    python bench/dream.py [--size 1024] [--tiles 512] [--octaves 4] [--steps 10]
                          [--layer relu4_3] [--threads 1] [--sample cat] [--estimate]
                          [--skip-whole]

On a shared 2-core machine a 1024² run takes minutes per setting; `--size 256 --tiles 128
--steps 2` checks that it works in well under a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any


def _rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports kB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One dream in this process; its timings and memory."""
    import torch

    from convscope import load_model
    from convscope.data.samples import load_image_or_sample
    from convscope.synthesize.octaves import resize
    from convscope.synthesize.recipes.dream import dream, plan_dream

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model("vgg16")
    image, _ = load_image_or_sample(args.sample)
    image = resize(image[None], (args.size, args.size)).clamp(0, 1)
    tile = args.tile or None
    options: dict[str, Any] = dict(octaves=args.octaves, steps=args.steps, tile=tile)
    before = _rss_mb()
    estimate = None
    if args.estimate:
        est = plan_dream(model, image, args.layer, **options).estimate()
        estimate = {
            "kept_for_backward_mb": est.saved_bytes / 2**20,
            "peak_mb": est.peak_bytes / 2**20,
            "ms_per_step": est.seconds_per_step * 1e3,
        }
    t0 = time.perf_counter()
    result = dream(model, image, args.layer, **options)
    total = time.perf_counter() - t0
    return {
        "tile": tile,
        "sizes": result.octave_sizes,
        "octave_seconds": result.octave_seconds,
        "total_s": total,
        "rss_before_mb": before,
        "rss_peak_mb": _rss_mb(),
        "estimate": estimate,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=1024, help="image side in pixels")
    ap.add_argument(
        "--tiles", type=int, nargs="*", default=[512], help="tile sizes to compare with none"
    )
    ap.add_argument("--octaves", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10, help="steps per octave")
    ap.add_argument("--layer", default="relu4_3")
    ap.add_argument("--sample", default="cat")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared 2-core machine two OpenMP threads "
        "spin-wait for each other; 0 = torch's default)",
    )
    ap.add_argument("--estimate", action="store_true", help="also run the loop's estimate")
    ap.add_argument(
        "--skip-whole", action="store_true", help="only the tiled runs (a whole 2048² needs GBs)"
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tile", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    rows = []
    for tile in ([] if args.skip_whole else [0]) + list(args.tiles):
        cmd = [sys.executable, __file__, "--child", "--tile", str(tile)]
        cmd += ["--size", str(args.size), "--octaves", str(args.octaves)]
        cmd += ["--steps", str(args.steps), "--layer", args.layer, "--sample", args.sample]
        cmd += ["--threads", str(args.threads)] + (["--estimate"] if args.estimate else [])
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"the run with tile {tile or 'none'} failed:\n{done.stderr[-2000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    first = rows[0]
    sizes = " → ".join(f"{w}×{h}" for h, w in first["sizes"])
    print(
        f"vgg16 {args.layer}, '{args.sample}' at {args.size}² px: {len(first['sizes'])} octaves "
        f"({sizes}), {args.steps} steps each; {first['threads']} threads, load average "
        f"{load:.1f}"
    )
    print(
        f"{'tile':>6s} {'s per octave (small → large)':>36s} {'total s':>8s} "
        f"{'RSS peak MB':>12s} {'dream added MB':>15s}"
    )
    for r in rows:
        per = " ".join(f"{s:6.1f}" for s in r["octave_seconds"])
        added = r["rss_peak_mb"] - r["rss_before_mb"]
        name = str(r["tile"]) if r["tile"] else "none"
        print(f"{name:>6s} {per:>36s} {r['total_s']:8.1f} {r['rss_peak_mb']:12.0f} {added:15.0f}")
        if r["estimate"]:
            e = r["estimate"]
            print(
                f"{'':6s} estimate, largest octave: {e['kept_for_backward_mb']:.0f} MB kept for "
                f"the backward pass, {e['peak_mb']:.0f} MB at the peak, "
                f"{e['ms_per_step']:.0f} ms per step"
            )


if __name__ == "__main__":
    main()
