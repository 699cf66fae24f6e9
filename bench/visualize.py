"""Synthesis loop speed: the `lucid` preset (Fourier image, decorrelated colour, lucid's
transforms, Adam) at 224 px on EfficientNet-Lite0, 128 steps, in one process.

Two ratios, each against a baseline written here the straightforward way (the same image
parameterization, transforms and optimizer, one full `model(x)` forward and one backward per
step, no probe):

1. a channel of a middle layer (`block10`, channel 0): our loop, whose forward stops after
   that layer, against the straightforward loop, which hooks the layer and runs the whole
   model every step (what most tools do): the speed-up of probe truncation;
2. a class logit (which needs the whole forward either way): our loop against the bare loop,
   `loss = -model(x)[0, c]; loss.backward()`: the overhead of the probe and the objective
   algebra, which must be ≤ 1.10.

Runs alternate (ours, baseline, ours, …) so drift hits both alike; medians of `--repeats`.

    python bench/visualize.py [--steps 128] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from convscope import load_model
from convscope.synthesize import channel, class_logit, image_param, optimize, seeded
from convscope.synthesize.transforms import standard


def cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return "unknown"
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return ", ".join(shown) or "none of avx2/avx512"


def straightforward(model: object, target: Callable[[Tensor], Tensor], steps: int) -> None:
    """The loop most tools write: full forward, the score, backward, Adam."""
    from convscope.models import ConvModel

    assert isinstance(model, ConvModel)
    with seeded(0):
        param = image_param(224)
        transforms = standard()
        opt = torch.optim.Adam(param.parameters(), lr=0.05)
        for _ in range(steps):
            opt.zero_grad()
            x = model.preprocess.normalize(transforms(param()))
            loss = -target(x)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model("efficientnet_lite0")
    for p in model.module.parameters():
        p.requires_grad_(False)  # as our loop does
    layer = model.resolve("block10")
    modules = dict(model.module.named_modules())
    klass = model.class_index("goldfish")
    print(f"CPU flags: {cpu_flags()}; torch threads: {torch.get_num_threads()}")
    print(
        f"efficientnet_lite0, 224 px, lucid preset, {args.steps} steps, medians of {args.repeats}"
    )

    def ours(objective: object) -> Callable[[], None]:
        def run() -> None:
            with seeded(0):
                param = image_param(224)
                optimize(model, objective, param, transforms=standard(), steps=args.steps)  # type: ignore[arg-type]

        return run

    def hooked_channel(x: Tensor) -> Tensor:
        kept: dict[str, Tensor] = {}
        handle = modules[layer].register_forward_hook(lambda _m, _i, o: kept.setdefault("a", o))
        try:
            model(x)
        finally:
            handle.remove()
        return kept["a"][:, 0].mean()

    def bare_class(x: Tensor) -> Tensor:
        return model(x)[0, klass]

    cases = [
        (
            "channel block10:0",
            ours(channel("block10", 0)),
            lambda: straightforward(model, hooked_channel, args.steps),
        ),
        (
            "class logit",
            ours(class_logit(klass)),
            lambda: straightforward(model, bare_class, args.steps),
        ),
    ]
    ours(class_logit(klass))  # build once
    straightforward(model, bare_class, 2)  # warm the kernels up
    for name, mine, base in cases:
        t_mine: list[float] = []
        t_base: list[float] = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            mine()
            t_mine.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            base()
            t_base.append(time.perf_counter() - t0)
        m, b = statistics.median(t_mine), statistics.median(t_base)
        per = 1000 * m / args.steps
        if name.startswith("channel"):
            print(
                f"{name}: ours {per:.1f} ms/step, straightforward {1000 * b / args.steps:.1f}"
                f" ms/step: {b / m:.2f}x faster (probe truncation)"
            )
        else:
            print(
                f"{name}: ours {per:.1f} ms/step, bare model(x).backward() "
                f"{1000 * b / args.steps:.1f} ms/step: overhead {m / b:.3f} (goal <= 1.10)"
            )


if __name__ == "__main__":
    main()
