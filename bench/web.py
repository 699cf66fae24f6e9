"""The web app's speed: a blend-slider request, and each page's first paint with the network
disabled, on a live `convscope serve` app on loopback, in one process.

- **Blend slider**: 50 requests, each with new blend weights of the shipped four-styles
  network at 256 px, as the Stylize page sends them when the slider moves: `POST /api/jobs
  ?wait=true` (queued on the network's lane, stylized, the result PNG written) and `GET` of
  the PNG. Median and p95 in ms; the goal is a median under 150 ms. The baseline is the same
  `stylize` call in this process, with no server, so the ratio is what the server adds.
- **First paint** of /explore, /attribute, /synthesize and /stylize in headless Chromium,
  with every request that does not go to the server refused (and counted: there must be
  none), from `performance`'s first-contentful-paint entry; median of 5 loads each.

    python bench/web.py [--requests 50] [--size 256] [--loads 5] [--threads 0]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch


def cpu_flags() -> str:
    from convscope.device import cpu_flags as flags

    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags()]
    return ", ".join(shown) or "none of avx2/avx512"


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _weights(i: int, n: int) -> list[float]:
    t = i / max(1, n - 1)  # the slider from starry_night to the_scream, as a page sends it
    return [1 - t, t, 0.0, 0.0]


def bench_blend(url: str, app: Any, requests: int, size: int) -> None:
    import httpx

    from convscope.stylenet.apply import stylize

    with httpx.Client(base_url=url, timeout=60) as c:
        image = c.post("/api/samples/chelsea").json()["id"]
        job = {"kind": "stylize", "image": image, "weights": [1, 0, 0, 0], "size": size}
        for _ in range(3):  # warm-up: the network loads on first use
            c.post("/api/jobs?wait=true", json={"job": job}).raise_for_status()
        times = []
        for i in range(requests):
            job["weights"] = _weights(i, requests)
            t0 = time.perf_counter()
            r = c.post("/api/jobs?wait=true", json={"job": job})
            r.raise_for_status()
            png = c.get(f"/api/results/{r.json()['result']['image']}.png")
            png.raise_for_status()
            times.append(time.perf_counter() - t0)
    net, _ = app.state.served.net()
    stored = app.state.store.image(image).image
    direct = []
    for i in range(requests):
        t0 = time.perf_counter()
        stylize(net, [stored], style=_weights(i, requests), size=size)
        direct.append(time.perf_counter() - t0)
    med, p95, base = statistics.median(times), _p95(times), statistics.median(direct)
    print(f"blend slider, {size} px, {requests} requests on loopback:")
    print(f"  stylize() alone, no server: median {base * 1000:.0f} ms")
    print(
        f"  request + PNG: median {med * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms "
        f"({med / base:.2f}x the library call; goal: median under 150 ms: "
        f"{'met' if med < 0.150 else 'NOT met'})"
    )


def bench_paint(url: str, loads: int) -> None:
    from convscope.testing import chromium
    from convscope.web import PAGES

    outside: list[str] = []

    def gate(route: Any) -> None:
        if route.request.url.startswith(url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    print(f"first contentful paint, network disabled (median of {loads} loads):")
    with chromium() as browser:
        for name in PAGES:
            paints = []
            for _ in range(loads):
                context = browser.new_context()
                context.route("**/*", gate)
                page = context.new_page()
                page.goto(f"{url}/{name}")
                page.wait_for_selector("body[data-ready]", timeout=60_000)
                fcp = page.evaluate(
                    "performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? -1"
                )
                paints.append(float(fcp))
                context.close()
            print(f"  /{name}: {statistics.median(paints):.0f} ms")
    print(f"  requests to anywhere but the server: {len(outside)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: as is)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from convscope.web import ServerConfig
    from convscope.web.testing import live_server

    print(f"{torch.get_num_threads()} threads; CPU flags: {cpu_flags()}; torch {torch.__version__}")
    config = ServerConfig(models=["efficientnet_lite0"], device="cpu")
    with live_server(config) as (url, app):
        bench_blend(url, app, args.requests, args.size)
        bench_paint(url, args.loads)


if __name__ == "__main__":
    main()
