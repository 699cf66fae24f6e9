"""The demo gallery (`convscope demo`): one module per section, listed in `SECTIONS`.

Each section module has one function `section(ctx: DemoContext) -> Section`. A new
capability adds its module and one line in `SECTIONS`, in the order the page shows them.
`build()` runs them and writes the page; the library never imports this package.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from convscope.data.files import atomic_write_text
from convscope.errors import UnknownNameError, UserInputError, WeightsUnavailableError
from convscope.events import Progress
from convscope.gallery import (
    activation_maps,
    activation_scaling,
    atlas,
    attribution,
    classification,
    evaluation,
    feature_space,
    filters,
    layer_table,
    style,
    stylenet,
    synthesis,
    texture,
    top_patches,
)
from convscope.gallery.context import DemoContext
from convscope.render.html import Section, gallery_html

__all__ = ["SECTIONS", "DemoContext", "SectionSpec", "build", "choose_sections"]


@dataclass(frozen=True)
class SectionSpec:
    name: str  # what `convscope demo --sections` takes
    title: str  # the heading on the page
    summary: str  # one line for `--list`
    run: Callable[[DemoContext], Section]


# fmt: off
SECTIONS: tuple[SectionSpec, ...] = (
    SectionSpec("classification", "Classification",
                "top-1 predictions on the bundled photos", classification.section),
    SectionSpec("filters", "Filters",
                "first-layer filters, higher-layer slices, depthwise", filters.section),
    SectionSpec("activations", "Activation maps",
                "VGG16's activation maps, layer by layer", activation_maps.section),
    SectionSpec("activation-scaling", "Activation scaling and overlays",
                "overlays; shared vs per-channel scaling", activation_scaling.section),
    SectionSpec("feature-space", "Feature space",
                "t-SNE of digits; neighbours of photo crops in features vs pixels",
                feature_space.section),
    SectionSpec("top-patches", "Maximally activating patches",
                "dataset patches that excite a channel most, with guided backprop",
                top_patches.section),
    SectionSpec("attribution", "Saliency",
                "occlusion, gradients, guided backprop, Grad-CAM", attribution.section),
    SectionSpec("segmentation-faithfulness", "Segmentation and faithfulness",
                "GrabCut from saliency; deletion/insertion curves", evaluation.section),
    SectionSpec("synthesis", "Synthesis",
                "class visualization per preset, diverse images, adversarial, inversion, dream",
                synthesis.section),
    SectionSpec("atlas", "Atlas",
                "a small static site: a page per channel, a map of the dataset", atlas.section),
    SectionSpec("texture", "Texture synthesis",
                "Gram-matrix textures layer by layer; Efros-Leung beside them", texture.section),
    SectionSpec("style", "Style transfer",
                "two styles, the style scale, a blend, original colours", style.section),
    SectionSpec("stylenet", "Fast style transfer",
                "the shipped four-style network in one pass; its blend grid", stylenet.section),
    SectionSpec("layers", "Layers", "VGG16's layer names and aliases", layer_table.section),
)
# fmt: on


def choose_sections(spec: str | None) -> list[SectionSpec]:
    """All sections (None), or the comma-separated names of `spec`, in the page's order."""
    if spec is None:
        return list(SECTIONS)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise UserInputError("--sections needs at least one section name (see --list).")
    known = {s.name: s for s in SECTIONS}
    for n in names:
        if n not in known:
            raise UnknownNameError("section", n, known, hint="`convscope demo --list` lists them.")
    return [s for s in SECTIONS if s.name in names]


def build(ctx: DemoContext, sections: Sequence[SectionSpec]) -> tuple[str, float]:
    """Run `sections` and write `ctx.out/index.html`; return its path and the seconds taken.
    Each section's wall time is printed under it. Progress: one event per section ("demo"),
    and whatever the sections report."""
    sections_done: list[Section] = []
    start = time.perf_counter()
    ctx.on_progress(Progress("demo", 0, len(sections), "sections"))
    for k, spec in enumerate(sections):
        ctx.on_progress(Progress("demo", k, len(sections), "sections", spec.name))
        t0 = time.perf_counter()
        try:
            result = spec.run(ctx)
        except WeightsUnavailableError as exc:  # a model whose weights are not installed
            result = Section(spec.title, f"Skipped: {exc}")
        seconds = time.perf_counter() - t0
        sections_done.append(replace(result, notes=(*result.notes, f"Made in {seconds:.1f} s.")))
        ctx.on_progress(Progress("demo", k + 1, len(sections), "sections", spec.name))
    elapsed = time.perf_counter() - start
    sources = "; ".join(f"{m.name}: {m.source}" for m in ctx.models.values())
    page = gallery_html(
        "convscope demo",
        "Seeing inside convolutional networks, on offline models and bundled images.",
        sections_done,
        footer=f"Generated by convscope in {elapsed:.0f} s. Weights — {sources}.",
    )
    path = ctx.out / "index.html"
    atomic_write_text(path, page)
    return str(path), elapsed
