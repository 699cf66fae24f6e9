"""The layer table: every VGG16 layer by torch's dotted name and by its alias."""

from __future__ import annotations

from convscope.gallery.context import DemoContext
from convscope.probe import layers
from convscope.render.html import Section


def section(ctx: DemoContext) -> Section:
    vgg = ctx.model("vgg16")
    rows: list[list[str]] = [["dotted name", "alias", "type", "output at 224"]]
    for info in layers(vgg, 224):
        if info.alias is None:
            continue
        rows.append([info.name, info.alias, info.type, "×".join(map(str, info.shape or ()))])
    return Section(
        "Layers",
        "Every layer can be named by torch's dotted name or by its alias; "
        "`convscope layers vgg16` prints this table.",
        table=rows,
    )
