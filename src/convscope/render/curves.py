"""Deletion and insertion curves (see `convscope.attribute.faithfulness`) as a plot."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any, Protocol

from PIL import Image
from torch import Tensor

from convscope.errors import UserInputError

__all__ = ["CurvesLike", "curves_plot"]


class CurvesLike(Protocol):
    """What a plot needs of one method's curves (`convscope.attribute.faithfulness.Curves`)."""

    @property
    def fractions(self) -> Tensor: ...
    @property
    def deletion(self) -> Tensor: ...
    @property
    def insertion(self) -> Tensor: ...
    @property
    def deletion_auc(self) -> float: ...
    @property
    def insertion_auc(self) -> float: ...


_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"]


def curves_plot(
    curves_by_method: Mapping[str, CurvesLike],
    *,
    title: str | None = None,
    dpi: int = 100,
    random_name: str = "random",
) -> Image.Image:
    """Deletion (left) and insertion (right) curves, one line per method with its AUC in the
    legend; the method named `random_name` (the random baseline) is drawn dashed grey.
    Returns an RGB Pillow image."""
    if not curves_by_method:
        raise UserInputError("there are no curves to plot.")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.2 if title else 3.9), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    panels = (
        ("deletion", "Deletion (lower AUC is better)", "fraction of pixels removed"),
        ("insertion", "Insertion (higher AUC is better)", "fraction of pixels inserted"),
    )
    top = max(
        1e-9, *(float(getattr(c, k).max()) for c in curves_by_method.values() for k, *_ in panels)
    )
    k = 0
    for name, c in curves_by_method.items():
        is_random = name == random_name
        style: dict[str, Any] = (
            {"color": "0.45", "linestyle": "--", "linewidth": 1.6}
            if is_random
            else {"color": _COLORS[k % len(_COLORS)], "linewidth": 2.0}
        )
        k += 0 if is_random else 1
        for ax, (key, _, _) in zip(axes, panels, strict=True):
            y = getattr(c, key).numpy()
            area = c.deletion_auc if key == "deletion" else c.insertion_auc
            ax.plot(c.fractions.numpy(), y, label=f"{name}  AUC {area:.3f}", **style)
    for ax, (_, heading, xlabel) in zip(axes, panels, strict=True):
        ax.set_title(heading, fontsize=11)
        ax.set_xlabel(xlabel)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, top * 1.08)
        ax.grid(alpha=0.3)
    for ax, loc in zip(axes, ("upper right", "upper left"), strict=True):
        ax.legend(fontsize=8.5, frameon=False, loc=loc)
    axes[0].set_ylabel("target probability")
    if title:
        fig.suptitle(title, fontsize=12)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    buf.seek(0)
    with Image.open(buf) as im:
        return im.convert("RGB")
