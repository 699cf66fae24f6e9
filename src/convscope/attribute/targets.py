"""What an attribution explains: a class score, or one neuron of an intermediate layer."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from convscope.errors import UserInputError
from convscope.models.base import ConvModel
from convscope.probe import Probe

__all__ = [
    "ClassTarget",
    "NeuronTarget",
    "Target",
    "class_target",
    "describe_target",
    "neuron_scores",
    "target_scores",
]


@dataclass(frozen=True)
class ClassTarget:
    """The logit (or, with `prob=True` in callers that ask, the probability) of one class."""

    index: int


@dataclass(frozen=True)
class NeuronTarget:
    """One activation: `layer`'s `channel` at `position` (y, x) of its output; None = the
    location where that channel is highest for the given image."""

    layer: str
    channel: int
    position: tuple[int, int] | None = None


Target = ClassTarget | NeuronTarget


def class_target(
    model: ConvModel, target: str | int | None, images: Tensor | None = None
) -> list[ClassTarget]:
    """A class name (exact or fuzzy, case-insensitive), an index, or None (each image's top
    prediction; needs `images`, a (B, 3, H, W) model-ready batch) → one target per image."""
    if model.classes is None:
        raise UserInputError(
            f"model {model.name!r} has no classes; explain a neuron with --layer and --channel."
        )
    if target is None:
        if images is None:
            raise UserInputError("the top prediction needs the images.")
        with torch.inference_mode():
            top = model(images).argmax(dim=1)  # (B,)
        return [ClassTarget(int(i)) for i in top]
    try:
        idx = model.class_index(target)
    except UserInputError:
        if isinstance(target, int) or str(target).lstrip("-").isdigit():
            raise
        idx = _fuzzy(model.classes, str(target))
    n = 1 if images is None else int(images.shape[0])
    return [ClassTarget(idx)] * n


def _fuzzy(classes: Sequence[str], name: str) -> int:
    low = name.lower().strip()
    lower = [c.lower() for c in classes]
    contains = [i for i, c in enumerate(lower) if low in c.split(", ") or c.startswith(low)]
    if len(contains) == 1:
        return contains[0]
    near = difflib.get_close_matches(low, lower, n=5, cutoff=0.6)
    sub = [c for c in lower if low in c and c not in near]
    options = [classes[lower.index(c)] for c in [*near, *sub]][:5]
    if options:
        hint = "did you mean " + ", ".join(repr(o) for o in options) + "?"
    else:
        hint = "`convscope classify` shows class names; an index works too."
    raise UserInputError(f"Unknown class {name!r}; {hint}")


def neuron_scores(model: ConvModel, x: Tensor, targets: Sequence[NeuronTarget]) -> Tensor:
    """(B,) the targeted activations for model-space input `x` (B, 3, H, W), with gradient.
    All targets must name the same layer. Must run inside any Probe rule the caller wants."""
    layers = {t.layer for t in targets}
    if len(layers) != 1:
        raise UserInputError("all neuron targets of one batch must name the same layer.")
    layer = layers.pop()
    probe = Probe(model, [layer], detach=False, stop_early=True)
    probe.run(x)
    act = probe.activations[layer]
    if act.dim() != 4:
        raise UserInputError(f"layer {layer} has output shape {tuple(act.shape)}; not spatial.")
    _, c, h, w = act.shape
    scores = []
    for b, t in enumerate(targets):
        if not 0 <= t.channel < c:
            raise UserInputError(
                f"channel {t.channel} is out of range 0..{c - 1} for layer {layer}."
            )
        if t.position is None:
            pos = int(act[b, t.channel].detach().flatten().argmax())
            y, xx = divmod(pos, w)
        else:
            y, xx = t.position
            if not (0 <= y < h and 0 <= xx < w):
                raise UserInputError(
                    f"position {y},{xx} is outside layer {layer}'s {h}x{w} output."
                )
        scores.append(act[b, t.channel, y, xx])
    return torch.stack(scores)


def target_scores(
    model: ConvModel, x: Tensor, targets: Sequence[Target], *, prob: bool = False
) -> Tensor:
    """(B,) differentiable scores of `targets` for model-space input `x` (B, 3, H, W): class
    logits (probabilities with `prob`) or neuron activations."""
    if len(targets) != x.shape[0]:
        raise UserInputError(f"got {len(targets)} targets for {x.shape[0]} images.")
    if all(isinstance(t, NeuronTarget) for t in targets):
        return neuron_scores(model, x, [t for t in targets if isinstance(t, NeuronTarget)])
    if not all(isinstance(t, ClassTarget) for t in targets):
        raise UserInputError("a batch must have only class targets or only neuron targets.")
    out = model(x)  # (B, K)
    if out.dim() != 2:
        raise UserInputError(f"model {model.name!r} returned shape {tuple(out.shape)}, not (B, K).")
    k = out.shape[1]
    indices = [t.index for t in targets if isinstance(t, ClassTarget)]
    bad = [i for i in indices if not 0 <= i < k]
    if bad:
        raise UserInputError(f"class index {bad[0]} is out of range 0..{k - 1}.")
    idx = torch.tensor(indices, device=x.device)
    scores = out.softmax(dim=1) if prob else out
    return scores.gather(1, idx.view(-1, 1)).squeeze(1)


def describe_target(model: ConvModel, target: Target) -> str:
    """A short label: "espresso (967)" for a class, "block10 ch 5 @ 3,4" for a neuron."""
    if isinstance(target, ClassTarget):
        if model.classes is not None and 0 <= target.index < len(model.classes):
            return f"{model.classes[target.index]} ({target.index})"
        return f"class {target.index}"
    where = "max" if target.position is None else f"{target.position[0]},{target.position[1]}"
    return f"{target.layer} ch {target.channel} @ {where}"
