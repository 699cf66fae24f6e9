"""Style transfer speed: golden_gate in the style of starry_night at 512 px on VGG16, our
default path against the straightforward implementation, in one process.

The baseline is written here the way most tools write it: the full VGG16 conv stack every step
(through relu5_3), a fixed 512-px image, float32, NCHW, Adam with lr 1 on the 0–255 image,
starting from the content, the same losses and weights (content relu4_2 × 5, style relu1_1..
relu5_1 × 100, TV × 1e-3, normalized as `convscope.synthesize.perceptual` says; written out
by hand below and checked against the library's numbers first), 300 steps.

Ours is `style_transfer` with its defaults. We measure the wall time it takes to reach a total
loss at or below the baseline's final loss: every `--check-every` steps its current image is
kept (with the time), and after the run each kept image is scored with the baseline's own
float32 loss at the full size; the first at or below the target gives the time. The ratio is
the baseline's time over ours. Both times include computing the targets.

`--memory` also runs 1024-px style transfers in fresh processes (a few steps each) and prints
their peak resident memory: the default (L-BFGS), Adam, and Adam with `--tile 512`.

    python bench/style.py [--size 512] [--steps 300] [--check-every 10] [--threads 0]
                          [--memory] [--memory-size 1024] [--memory-steps 3]

Needs ../shared/data (the classic content and style images); without it, it says so and exits.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CONTENT = DATA / "content" / "golden_gate.jpg"
STYLE = DATA / "styles" / "starry_night.jpg"
STYLE_LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
CONTENT_LAYER = "relu4_2"
WEIGHTS = (5.0, 100.0, 1e-3)  # content, style, tv


def _rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def _status_mb(field: str) -> float | None:
    """VmRSS or VmHWM (the peak) from /proc/self/status, in MB; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the peak RSS to the current one (Linux: clear_refs 5), so that loading the
    model does not hide the run's own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _images(size: int) -> tuple[Any, Any]:
    from convscope.data.samples import load_image_or_sample
    from convscope.synthesize.octaves import resize
    from convscope.synthesize.recipes.style import output_size

    content, _ = load_image_or_sample(str(CONTENT))
    style, _ = load_image_or_sample(str(STYLE))
    c = content[None]
    s = style[None]
    c = resize(c, output_size((int(c.shape[-2]), int(c.shape[-1])), size)).clamp(0, 1)
    s = resize(s, output_size((int(s.shape[-2]), int(s.shape[-1])), size)).clamp(0, 1)
    return c, s


class Straightforward:
    """The baseline's network and losses, by hand: VGG16's conv stack as one Sequential
    through relu5_3, activations picked out by index."""

    def __init__(self, model: Any, content: Any, style: Any) -> None:
        import torch

        self.model = model
        features = model.module.features
        names = {a: int(model.aliases[a].split(".")[-1]) for a in [*STYLE_LAYERS, CONTENT_LAYER]}
        self.index = names
        self.net = torch.nn.Sequential(*list(features.children())[: model_index(model) + 1])
        self.mean = torch.tensor((123.68, 116.779, 103.939)).view(1, 3, 1, 1)
        with torch.no_grad():
            acts = self.acts(content * 255.0)
            self.content = acts[CONTENT_LAYER]
            sacts = self.acts(style * 255.0)
            self.grams = {n: self.gram(sacts[n]) for n in STYLE_LAYERS}

    def acts(self, levels: Any) -> dict[str, Any]:
        x = levels - self.mean
        out = {}
        want = {i: n for n, i in self.index.items()}
        for i, layer in enumerate(self.net):
            x = layer(x)
            if i in want:
                out[want[i]] = x
        return out

    @staticmethod
    def gram(f: Any) -> Any:
        b, c, h, w = f.shape
        f = f.reshape(b, c, h * w)
        return f @ f.transpose(1, 2) / (h * w)

    def loss(self, levels: Any) -> Any:
        """The total loss of an image in 0–255 levels (1, 3, H, W)."""
        acts = self.acts(levels)
        cw, sw, tw = WEIGHTS
        content = (acts[CONTENT_LAYER] - self.content).pow(2).sum() / self.content.pow(2).sum()
        style = 0.0
        for n in STYLE_LAYERS:
            g, a = self.gram(acts[n]), self.grams[n]
            style = style + (g - a).pow(2).sum() / a.pow(2).sum()
        style = style / len(STYLE_LAYERS)
        dx = levels[..., :, 1:] - levels[..., :, :-1]
        dy = levels[..., 1:, :] - levels[..., :-1, :]
        tv = (dx.pow(2).sum() + dy.pow(2).sum()) / levels.numel()
        return cw * content + sw * style + tw * tv


def model_index(model: Any) -> int:
    return int(model.aliases["relu5_3"].split(".")[-1])


def baseline(model: Any, size: int, steps: int) -> tuple[float, float, Any]:
    """The straightforward run: (seconds, final loss, image in [0, 1])."""
    import torch

    t0 = time.perf_counter()
    content, style = _images(size)
    ref = Straightforward(model, content, style)
    x = (content * 255.0).clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=1.0)
    for _ in range(steps):
        opt.zero_grad()
        loss = ref.loss(x)
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(0.0, 255.0)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        final = float(ref.loss(x))
    return seconds, final, (x.detach() / 255.0).clamp(0, 1)


def ours(model: Any, size: int, every: int) -> tuple[list[tuple[int, float, Any]], Any]:
    """Our default run, with its image every `every` steps: [(step, seconds, image)]."""
    from convscope.synthesize.recipes.style import style_transfer

    kept: list[tuple[int, float, Any]] = []
    content, style = _images(size)
    t0 = time.perf_counter()

    def on(event: Any) -> None:
        preview = getattr(event, "preview", None)
        if preview is not None and tuple(preview.shape[-2:]) == tuple(content.shape[-2:]):
            kept.append((event.done, time.perf_counter() - t0, preview.clone()))

    result = style_transfer(model, content, [style], size=size, preview_every=every, on_progress=on)
    return kept, result


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One 1024-px run in this process (for --memory)."""
    import torch

    from convscope import load_model
    from convscope.synthesize.recipes.style import style_transfer

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model("vgg16")
    content, style = _images(args.memory_size)
    options: dict[str, Any] = json.loads(args.options)
    if options.get("tile"):  # as `convscope style --tile` does
        from convscope.cli.common import return_freed_memory

        return_freed_memory()
    gc.collect()
    reset = _reset_peak()
    before = (_status_mb("VmRSS") if reset else None) or _rss_mb()
    t0 = time.perf_counter()
    style_transfer(
        model, content, [style], size=args.memory_size, steps=args.memory_steps, **options
    )
    peak = (_status_mb("VmHWM") if reset else None) or _rss_mb()
    return {"seconds": time.perf_counter() - t0, "rss_before_mb": before, "rss_peak_mb": peak}


def memory(args: argparse.Namespace) -> None:
    settings = [
        ("default (L-BFGS)", {}),
        ("adam", {"optimizer": "adam"}),
        ("adam, --tile 512", {"optimizer": "adam", "tile": 512}),
        ("adam, --tile 256", {"optimizer": "adam", "tile": 256}),
    ]
    print(f"peak memory at {args.memory_size} px, {args.memory_steps} steps, fresh processes:")
    for name, options in settings:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "--memory-size",
            str(args.memory_size),
            "--memory-steps",
            str(args.memory_steps),
            "--threads",
            str(args.threads),
            "--options",
            json.dumps(options),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        added = r["rss_peak_mb"] - r["rss_before_mb"]
        print(
            f"  {name}: peak RSS {r['rss_peak_mb']:,.0f} MB ({added:+,.0f} MB over the loaded "
            f"model and images), {r['seconds'] / args.memory_steps:.1f} s per step"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=300, help="the baseline's Adam steps")
    parser.add_argument("--check-every", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument("--memory-size", type=int, default=1024)
    parser.add_argument("--memory-steps", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--save", type=Path, default=None, help="write both results here")
    args = parser.parse_args()
    if not CONTENT.exists() or not STYLE.exists():
        print(f"skipped: {DATA} (the classic content and style images) is not here.")
        return
    if args.child:
        print(json.dumps(child(args)))
        return
    import torch

    from convscope import load_model
    from convscope.device import cpu_flags, fast_dtype

    if args.threads:
        torch.set_num_threads(args.threads)
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in cpu_flags()]
    native = fast_dtype(torch.device("cpu"))
    print(
        f"CPU flags: {', '.join(shown) or 'none of avx2/avx512'}; native bf16: "
        f"{'yes' if native is torch.bfloat16 else 'no'}; torch threads: {torch.get_num_threads()}"
    )
    if args.memory_only:
        memory(args)
        return
    model = load_model("vgg16")
    for p in model.module.parameters():
        p.requires_grad_(False)
    check(model, args.size)
    print(f"golden_gate × starry_night, {args.size} px (long side), VGG16")
    base_s, base_loss, base_image = baseline(model, args.size, args.steps)
    print(
        f"straightforward: {args.steps} Adam steps, full forward to relu5_3, fp32: "
        f"{base_s:.1f} s, final loss {base_loss:.4f}"
    )
    kept, result = ours(model, args.size, args.check_every)
    content, style = _images(args.size)
    ref = Straightforward(model, content, style)
    reached = None
    scored = []
    with torch.no_grad():
        for step, seconds, image in kept:
            loss = float(ref.loss(image * 255.0))
            scored.append((step, seconds, loss))
            if reached is None and loss <= base_loss:
                reached = (step, seconds, loss)
    last_step, last_s, last_loss = scored[-1]
    print(
        f"ours (defaults: {result.precision}, scales {[max(s) for s in result.sizes]}, "
        f"{result.steps} steps): {last_s:.1f} s, final loss {last_loss:.4f}"
    )
    if reached is None:
        print(f"ours never reached the baseline's final loss {base_loss:.4f} in {last_step} steps")
    else:
        step, seconds, loss = reached
        print(
            f"ours reached {loss:.4f} <= {base_loss:.4f} at step {step} after {seconds:.1f} s: "
            f"{base_s / seconds:.2f}x faster (goal >= 3)"
        )
    if args.save is not None:
        from convscope.data.images import save_png

        save_png(kept[-1][2][0], args.save / "style_ours.png")
        save_png(base_image[0], args.save / "style_straightforward.png")
    if args.memory:
        memory(args)


def check(model: Any, size: int) -> None:
    """The hand-written loss equals the library's on the same image (to 1e-4 relative)."""
    import torch

    from convscope.synthesize.perceptual import (
        StyleTarget,
        content_features,
        current_losses,
        perceptual,
        style_grams,
    )

    content, style = _images(min(size, 128))
    ref = Straightforward(model, content, style)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        image = (content + 0.1 * torch.randn_like(content)).clamp(0, 1)
    objective = perceptual(
        content=content_features(model, content, [CONTENT_LAYER]),
        styles=[StyleTarget(style_grams(model, [style], STYLE_LAYERS))],
        content_weight=WEIGHTS[0],
        style_weight=WEIGHTS[1],
        tv_weight=WEIGHTS[2],
    )
    mine = current_losses(model, image, objective)["loss"]
    with torch.no_grad():
        theirs = float(ref.loss(image * 255.0))
    if abs(mine - theirs) > 1e-4 * abs(theirs):
        raise SystemExit(f"the hand-written loss {theirs} differs from the library's {mine}")


if __name__ == "__main__":
    main()
