"""Synthesis by gradient ascent on pixels: class visualizations per preset, diverse images of
one channel, an adversarial example, feature inversion and DeepDream, all at small sizes."""

from __future__ import annotations

import torch
from torch import Tensor

from convscope.data.samples import load_sample
from convscope.gallery.context import DemoContext
from convscope.render.grids import image_grid, titled
from convscope.render.html import Figure, Section
from convscope.synthesize.recipes.adversarial import adversarial, adversarial_panel
from convscope.synthesize.recipes.dream import dream
from convscope.synthesize.recipes.invert import inversion_panel, invert
from convscope.synthesize.recipes.visualize import visualize

CLASSES = ("goldfish", "pineapple")
SIZE = 96  # the class visualizations: small, so the section stays quick
PRESET_STEPS = {"simonyan": 100, "yosinski": 120, "lucid": 128}
"""simonyan with CS231n's 100 steps; yosinski and lucid with fewer than their papers'
1000 and 512, for time."""
DIVERSE = ("block10", 21)  # efficientnet_lite0: a channel with several looks
INVERT_LAYERS = ("relu2_2", "relu3_3", "relu4_3", "relu5_3")


def _classes(ctx: DemoContext) -> Figure:
    cm = ctx.model("efficientnet_lite0")
    tiles: list[Tensor] = []
    labels: list[str] = []
    for preset, steps in PRESET_STEPS.items():
        for name in CLASSES:
            r = visualize(
                cm, target=name, preset=preset, steps=steps, size=SIZE, on_progress=ctx.on_progress
            )
            tiles.append(r.images[0])
            p = r.target_probability[0] if r.target_probability else float("nan")
            labels.append(f"{preset}: {name} p={p:.2f}")
    grid = image_grid(tiles, labels=labels, ncol=len(CLASSES), tile=192)
    fig = ctx.save(
        "synthesis_classes.png", titled(grid, "efficientnet_lite0 · one class per column")
    )
    schedule = ", ".join(f"{k} {v}" for k, v in PRESET_STEPS.items())
    return Figure(
        fig.src,
        f"Each image maximizes one class's score ({SIZE} px; rows by preset, steps: {schedule}). "
        "simonyan (CS231n's settings: an L2 penalty, normalized steps, blur every 10 steps) "
        "gives the high-frequency patterns gradient ascent is known for; yosinski's decay "
        "and blur smooth them; lucid's Fourier image, decorrelated colour and random "
        "transforms give the most natural-looking parts. p is the model's probability for "
        "the class on the image.",
        wide=True,
    )


def _diverse(ctx: DemoContext) -> Figure:
    cm = ctx.model("efficientnet_lite0")
    layer, ch = DIVERSE
    r = visualize(
        cm,
        layer=layer,
        channel=ch,
        batch=4,
        diversity_weight=100.0,
        steps=96,
        size=SIZE,
        seed=1,
        on_progress=ctx.on_progress,
    )
    grid = image_grid(list(r.images), ncol=4, tile=192, labels=[f"image {i}" for i in range(4)])
    fig = ctx.save(
        "synthesis_diverse.png", titled(grid, f"efficientnet_lite0 {layer} ch {ch} · 4 images")
    )
    return Figure(
        fig.src,
        f"Four images of one channel ({layer} ch {ch}) optimized together with the diversity "
        "term of Olah et al. 2017 (minus the cosine similarity of their Gram matrices), which "
        "pushes them apart: one unit responds to several different things.",
        wide=True,
    )


def _adversarial(ctx: DemoContext) -> Figure:
    cm = ctx.model("efficientnet_lite0")
    r = adversarial(
        cm,
        load_sample("coffee"),
        target="goldfish",
        eps=2 / 255,
        steps=40,
        min_probability=0.9,
        on_progress=ctx.on_progress,
    )
    fig = ctx.save("synthesis_adversarial.png", adversarial_panel(r))
    return Figure(
        fig.src,
        f"An adversarial example (targeted PGD, L∞ ≤ 2/255, {r.steps} steps): no pixel moves "
        f"by more than two 8-bit levels, yet the model now says {r.after[0].name} "
        f"({r.after[0].prob:.0%}) instead of {r.before[0].name} ({r.before[0].prob:.0%}). "
        "The attack was checked on the 8-bit PNG it saves. Right: the change, ×10.",
        wide=True,
    )


def _inversion(ctx: DemoContext) -> Figure:
    vgg = ctx.model("vgg16")
    r = invert(
        vgg, load_sample("cat"), list(INVERT_LAYERS), size=96, steps=80,
        on_progress=ctx.on_progress,
    )  # fmt: skip
    fig = ctx.save("synthesis_inversion.png", inversion_panel(r))
    scores = ", ".join(f"{x.layer} {x.psnr:.1f} dB" for x in r.layers)
    return Figure(
        fig.src,
        "Feature inversion (Mahendran & Vedaldi 2015): from noise, an image whose VGG16 "
        "features at one layer match the cat's. Early layers keep almost everything; deeper "
        f"ones keep the parts and the layout but lose colour and detail ({scores}).",
        wide=True,
    )


def _dream(ctx: DemoContext) -> Figure:
    vgg = ctx.model("vgg16")
    r = dream(vgg, load_sample("cat"), "relu4_3", octaves=3, steps=10, size=256,
              on_progress=ctx.on_progress)  # fmt: skip
    sizes = " → ".join(f"{w}x{h}" for h, w in r.octave_sizes)
    fig = ctx.save("synthesis_dream.png", r.image[0])
    return Figure(
        fig.src,
        f"DeepDream (Mordvintsev et al. 2015) on VGG16 relu4_3: whatever the layer sees is "
        f"amplified, octave by octave ({sizes}; 10 steps each, the detail carried up).",
        wide=True,
    )


def section(ctx: DemoContext) -> Section:
    torch.manual_seed(0)
    figures = [_classes(ctx), _diverse(ctx), _adversarial(ctx)]
    skipped: list[str] = []
    if ctx.try_model("vgg16", skipped) is not None:
        figures += [_inversion(ctx), _dream(ctx)]
    return Section(
        "Synthesis",
        "Every picture here comes from the same loop: a parameterized image, random "
        "transforms, the model, an objective, an optimizer step (`convscope visualize`, "
        "`adversarial`, `invert`, `dream`). Each PNG carries its recipe, so `convscope "
        "reproduce` makes it again.",
        figures,
        notes=tuple(skipped),
    )
