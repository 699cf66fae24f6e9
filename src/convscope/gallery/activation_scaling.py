"""Activation scaling and overlays: which channels fire where, and how the scaling of a grid
changes what it shows."""

from __future__ import annotations

from torch import Tensor

from convscope.data.samples import load_sample
from convscope.gallery.context import DemoContext
from convscope.inspect.activations import (
    activation_grid,
    activation_maps,
    overlay_figure,
    strongest_channels,
)
from convscope.render.html import Figure, Section
from convscope.render.maps import Scaling
from convscope.render.panels import side_by_side

SCALINGS: tuple[tuple[Scaling, str], ...] = (("shared", "shared"), ("channel", "per-channel"))


def _spread(act: Tensor, k: int) -> list[int]:
    """`k` live channels spanning strongest to weakest mean, strongest first."""
    means = act.float().mean(dim=(1, 2))
    live = [int(i) for i in means.argsort(descending=True) if act[int(i)].amax() > 0]
    if len(live) <= k:
        return live
    return list(dict.fromkeys(live[round(j * (len(live) - 1) / (k - 1))] for j in range(k)))


def section(ctx: DemoContext) -> Section:
    skipped: list[str] = []
    figures: list[Figure] = []
    eff = ctx.try_model("efficientnet_lite0", skipped)
    if eff is not None:
        coffee = load_sample("coffee")
        act = activation_maps(eff, coffee, "block10")
        top = strongest_channels(act, 3)
        c, h, w = act.shape
        picture = overlay_figure(
            eff.preprocess.geometry(coffee),
            act,
            top,
            title=f"efficientnet_lite0 · block10 · {c}x{h}x{w} on coffee",
            notes=[f" (#{r + 1} by mean)" for r in range(len(top))],
        )
        fig = ctx.save("act_overlay_block10.png", picture)
        figures.append(
            Figure(
                fig.src,
                f"The three block10 channels with the highest mean, their {h}x{w} maps "
                "upsampled bilinearly over the crop the model saw (inferno: dark = low).",
                wide=True,
            )
        )
    vgg = ctx.try_model("vgg16", skipped)
    if vgg is not None:
        act = activation_maps(vgg, load_sample("cat"), "relu3_3")
        chosen = _spread(act, 16)
        grids = [
            activation_grid(
                act,
                channels=chosen,
                scaling=scaling,
                ncol=4,
                title=f"vgg16 relu3_3 on cat · {label}",
            )
            for scaling, label in SCALINGS
        ]
        fig = ctx.save("act_scaling_relu3_3.png", side_by_side(grids, gap=24))
        figures.append(
            Figure(
                fig.src,
                "The same 16 channels of relu3_3, ordered from the strongest mean to the "
                "weakest. Left, one shared min..max: a few strong channels "
                "dominate and weak ones are nearly black. Right, each map stretched to its own "
                "min..max: every channel's pattern shows, but brightness no longer compares.",
                wide=True,
            )
        )
    return Section(
        "Activation scaling and overlays",
        "Which channels fire where. How maps are scaled changes what you see, so every grid "
        "states its scaling.",
        figures,
        notes=tuple(skipped),
    )
