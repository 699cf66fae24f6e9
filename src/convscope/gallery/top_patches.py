"""Maximally activating patches of VGG16 relu4_3 over 64 crops of the bundled photos."""

from __future__ import annotations

from convscope.data.datasets import SampleCrops
from convscope.gallery.context import DemoContext
from convscope.inspect.patches import top_patches_figure
from convscope.inspect.scan import scan_top_activations
from convscope.render.html import Figure, Section


def section(ctx: DemoContext) -> Section:
    vgg = ctx.model("vgg16")
    data = SampleCrops(64, size=256, seed=1)
    top = scan_top_activations(vgg, data, "relu4_3", k=6, batch_size=4, on_progress=ctx.on_progress)
    # Channels whose six best patches are strongest on average: clear, consistent detectors.
    strongest = top.values.mean(dim=1).argsort(descending=True)[:6].tolist()
    fig = top_patches_figure(vgg, data, "relu4_3", top, strongest, guided=True, tile=88)
    saved = ctx.save("top_patches_relu4_3.png", fig)
    return Section(
        "Maximally activating patches",
        "One streaming pass over 64 crops of the bundled photos keeps, for all 512 channels of "
        "VGG16 relu4_3 at once, the six image locations that excite each channel most. Each "
        "patch is the unit's exact receptive field (92 px); beside it, guided backprop shows "
        "which of its pixels drive the neuron.",
        [Figure(saved.src, "Six channels, six patches each, with guided backprop.", wide=True)],
    )
