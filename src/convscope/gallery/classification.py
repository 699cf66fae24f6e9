"""Classification: EfficientNet-Lite0's top-1 on the bundled photos, as the model sees them."""

from __future__ import annotations

from convscope.data.samples import load_sample
from convscope.gallery.context import DemoContext
from convscope.render.grids import image_grid, titled
from convscope.render.html import Figure, Section

SAMPLES = ("coffee", "cat", "flower", "china", "rocket", "hopper", "astronaut")


def section(ctx: DemoContext) -> Section:
    cm = ctx.model("efficientnet_lite0")
    images = [load_sample(n) for n in SAMPLES]
    preds = cm.classify(images, top=3)
    crops = [cm.preprocess.geometry(im) for im in images]  # what the model sees, (3, 224, 224)
    labels = [f"{p[0].name} {p[0].prob:.0%}" for p in preds]
    grid = image_grid(crops, labels=labels, ncol=4, tile=224)
    fig = ctx.save("classify.png", titled(grid, "EfficientNet-Lite0 · top-1 on bundled samples"))
    table: list[list[str]] = [["sample", "1st", "2nd", "3rd"]]
    for name, ps in zip(SAMPLES, preds, strict=True):
        table.append([name, *(f"{p.name} ({p.prob:.2f})" for p in ps)])
    return Section(
        "Classification",
        "An ImageNet classifier that ships offline (EfficientNet-Lite0, TF-SAME padding, its "
        "own preprocessing) on the images bundled with scikit-image, scikit-learn and "
        "matplotlib.",
        [Figure(fig.src, "Top-1 class and probability for each sample.", wide=True)],
        table,
    )
