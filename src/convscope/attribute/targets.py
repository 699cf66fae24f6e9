"""What an attribution explains: a class score, or one neuron of an intermediate layer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from convscope.errors import UnknownNameError, UserInputError
from convscope.models.base import ConvModel, check_image_batch
from convscope.probe import Probe, capture

__all__ = [
    "ClassTarget",
    "NeuronTarget",
    "Target",
    "class_target",
    "describe_target",
    "make_targets",
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
    """A class by one of its comma-separated synonyms or a unique prefix (case-insensitive);
    otherwise a one-sentence error with the closest names."""
    low = name.lower().strip()
    lower = [c.lower() for c in classes]
    hits = [i for i, c in enumerate(lower) if low in c.split(", ") or c.startswith(low)]
    if len(hits) == 1:
        return hits[0]
    raise UnknownNameError(
        "class", name, classes, hint="`convscope classify` shows class names; an index works too."
    )


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


def _model_input(model: ConvModel, seen: Tensor) -> Tensor:
    """Seen images → model input (normalize only: the geometry was applied already)."""
    return model.preprocess.normalize(seen.to(model.device))


def make_targets(
    model: ConvModel,
    seen: Tensor,
    target: str | int | None = None,
    *,
    layer: str | None = None,
    channel: int | None = None,
    position: tuple[int, int] | None = None,
) -> list[Target]:
    """One target per image of `seen` (B, 3, H, W), checked against the model.

    With `channel`, the neuron `layer`/`channel` at `position` (y, x in the layer's output;
    None = where that channel is highest); otherwise the class `target` (a name, matched
    fuzzily, or an index; None = each image's top prediction)."""
    seen = check_image_batch(seen)
    b = int(seen.shape[0])
    if channel is None:
        if position is not None:
            raise UserInputError("--position needs --channel (and --layer) to pick a neuron.")
        return list(class_target(model, target, _model_input(model, seen)))
    if target is not None:
        raise UserInputError(
            "give either a class target or a neuron (--layer and --channel), not both."
        )
    if layer is None:
        raise UserInputError("--channel needs --layer to name the neuron's layer.")
    model.resolve(layer)
    act = capture(model, _model_input(model, seen[:1]), [layer])[layer]
    if act.dim() != 4:
        raise UserInputError(
            f"layer {layer} has output shape {tuple(act.shape)}; a neuron target needs a "
            "spatial layer."
        )
    _, c, h, w = (int(d) for d in act.shape)
    if not 0 <= channel < c:
        raise UserInputError(f"channel {channel} is out of range 0..{c - 1} for layer {layer}.")
    if position is not None:
        y, x = position
        if not (0 <= y < h and 0 <= x < w):
            raise UserInputError(
                f"position {y},{x} is outside layer {layer}'s {h}x{w} output "
                f"(y in 0..{h - 1}, x in 0..{w - 1})."
            )
    return [NeuronTarget(layer, channel, position)] * b
