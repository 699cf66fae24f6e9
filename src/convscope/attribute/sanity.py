"""Model-parameter randomization (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").
On a deep copy of the model, the parameters are re-initialized in a cascade from the output
layer towards the input, and the map is recomputed after each step. A map that explains the
*model* must change as the model is destroyed; one whose Spearman rank correlation with the
original map stays ≥ 0.5 at full randomization is flagged as insensitive to the model (it
mostly shows the image, like an edge detector).

Images are (3, H, W) RGB in [0, 1] *as the model sees them* (after `model.preprocess.geometry`),
as for every method of `convscope.attribute`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from convscope.attribute.faithfulness import attribution_maps, check_one_image
from convscope.attribute.methods import AttributionFn, method_function
from convscope.attribute.targets import Target
from convscope.errors import UserInputError
from convscope.models.base import ConvModel

__all__ = [
    "INSENSITIVE_SPEARMAN",
    "SanityResult",
    "SanityStep",
    "cascade_groups",
    "sanity_check",
]

INSENSITIVE_SPEARMAN = 0.5
"""A method whose maps keep a Spearman correlation ≥ this at full randomization is flagged."""


def _numel(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _is_norm(m: nn.Module) -> bool:
    return "Norm" in type(m).__name__


def cascade_groups(
    module: nn.Module, *, min_steps: int = 5, max_steps: int = 10
) -> list[tuple[str, ...]]:
    """The randomization cascade of `module`: groups of dotted module names, the output layer's
    group first, then progressively deeper ones towards the input.

    Groups are the top-level children that hold parameters (norm layers join the layer before
    them); while there are fewer than `min_steps`, the largest container is split into its
    children; while there are more than `max_steps`, the adjacent pair with the fewest
    modules (then parameters) is merged, siblings (children of one container) first, never
    the output layer's group."""
    units = [(n, m) for n, m in module.named_children() if _numel(m)]
    groups: list[list[tuple[str, nn.Module]]] = []

    def regroup(items: list[tuple[str, nn.Module]]) -> list[list[tuple[str, nn.Module]]]:
        out: list[list[tuple[str, nn.Module]]] = []
        for item in items:
            if _is_norm(item[1]) and out:
                out[-1].append(item)
            else:
                out.append([item])
        if len(out) > 1 and len(out[0]) == 1 and _is_norm(out[0][0][1]):
            out[1] = out[0] + out[1]
            out = out[1:]
        return out

    groups = regroup(units)
    while len(groups) < min_steps:
        splittable = [
            i
            for i, g in enumerate(groups)
            if len(g) == 1 and sum(1 for c in g[0][1].children() if _numel(c)) >= 2
        ]
        if not splittable:
            break
        i = max(splittable, key=lambda j: _numel(groups[j][0][1]))
        name, mod = groups[i][0]
        children = [(f"{name}.{n}", c) for n, c in mod.named_children() if _numel(c)]
        groups[i : i + 1] = regroup(children)

    def parent(g: list[tuple[str, nn.Module]]) -> str | None:
        parents = {n.rpartition(".")[0] for n, _ in g}
        return parents.pop() if len(parents) == 1 else None

    while len(groups) > max(2, max_steps):
        sizes = [sum(_numel(m) for _, m in g) for g in groups]
        pairs = range(len(groups) - 2)  # never merge the output layer's group
        siblings = [
            j
            for j in pairs
            if parent(groups[j]) is not None and parent(groups[j]) == parent(groups[j + 1])
        ]
        i = min(
            siblings or pairs,
            key=lambda j: (len(groups[j]) + len(groups[j + 1]), sizes[j] + sizes[j + 1]),
        )
        groups[i : i + 2] = [groups[i] + groups[i + 1]]
    if not groups:
        raise UserInputError("the model has no parameters to randomize.")
    return [tuple(n for n, _ in g) for g in reversed(groups)]


def _reinit(module: nn.Module, names: Sequence[str], gen: torch.Generator) -> None:
    """Re-initialize the parameters of the named submodules: `reset_parameters()` where a
    module has it (its own default initialization, drawn from torch's RNG, which the caller has
    seeded), otherwise N(0, 0.02²) from `gen`."""
    for name in names:
        sub = module.get_submodule(name)
        for m in sub.modules():
            own = list(m.parameters(recurse=False))
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
            elif own:
                with torch.no_grad():
                    for p in own:
                        noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
                        p.copy_((noise * 0.02).to(p.device, p.dtype))


def _label(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{names[0]} … {names[-1]}"


@dataclass(frozen=True)
class SanityStep:
    layers: tuple[str, ...]  # the modules re-initialized in this step (cumulative with earlier)
    spearman: float  # rank correlation with the original map (0 when the map went constant)
    ssim: float | None  # structural similarity of the [0, 1]-scaled maps, None if too small

    @property
    def label(self) -> str:
        return _label(self.layers)


@dataclass(frozen=True)
class SanityResult:
    """Cascading randomization of one method on one image."""

    method: str
    steps: tuple[SanityStep, ...]
    original: Tensor  # (H, W) the map of the trained model
    maps: tuple[Tensor, ...]  # (H, W) the map after each step
    threshold: float = INSENSITIVE_SPEARMAN

    @property
    def final_spearman(self) -> float:
        return self.steps[-1].spearman

    @property
    def mean_spearman(self) -> float:
        """The mean correlation over the cascade: how long the map resists randomization."""
        return sum(s.spearman for s in self.steps) / len(self.steps)

    @property
    def insensitive(self) -> bool:
        """True when the map stays similar with every layer randomized: it does not depend
        on what the model learned."""
        return self.final_spearman >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "final_spearman": round(self.final_spearman, 6),
            "mean_spearman": round(self.mean_spearman, 6),
            "insensitive": self.insensitive,
            "threshold": self.threshold,
            "steps": [
                {
                    "randomized": list(s.layers),
                    "spearman": round(s.spearman, 6),
                    "ssim": None if s.ssim is None else round(s.ssim, 6),
                }
                for s in self.steps
            ],
        }


def _spearman(a: Tensor, b: Tensor) -> float:
    from scipy.stats import spearmanr

    x = a.flatten().double().numpy()
    y = b.flatten().double().numpy()
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(spearmanr(x, y).statistic)


def _ssim(a: Tensor, b: Tensor) -> float | None:
    if min(a.shape) < 7:
        return None
    from skimage.metrics import structural_similarity

    def unit(t: Tensor) -> Any:
        x = t.double().numpy()
        span = np.ptp(x)
        return (x - x.min()) / span if span > 0 else np.zeros_like(x)

    return float(structural_similarity(unit(a), unit(b), data_range=1.0))  # type: ignore[no-untyped-call]


def sanity_check(
    model: ConvModel,
    image: Tensor,
    method: str | AttributionFn,
    target: Target,
    *,
    cascade: Sequence[str] | None = None,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    registry: Mapping[str, AttributionFn] | None = None,
    threshold: float = INSENSITIVE_SPEARMAN,
) -> SanityResult:
    """Cascading model-parameter randomization (Adebayo et al. 2018) of `method` on `image`.

    A deep copy of the model is randomized step by step, from the output layer towards the
    input (`cascade`: dotted module names, one per step, output first; default
    `cascade_groups(model.module)`, ~5–10 steps); after each step the map is recomputed and
    compared with the original map by Spearman rank correlation (and SSIM). The original model
    is never modified, and torch's global RNG state is left as it was.
    """
    name, fn = method_function(method, registry)
    img = check_one_image(image)
    batch = img[None]
    if cascade is None:
        groups = cascade_groups(model.module)
    else:
        groups = [(model.resolve(c),) for c in cascade]
        if not groups:
            raise UserInputError("the cascade names no layers.")
    original = attribution_maps(model, batch, [target], fn, options)[0]
    if float(original.max() - original.min()) == 0:
        raise UserInputError(
            f"method {name!r} gives a constant map on this image; there is nothing to compare."
        )
    clone = model.with_module(copy.deepcopy(model.module))
    dev = clone.device
    devices = [dev] if dev.type == "cuda" else []
    gen = torch.Generator().manual_seed(seed)
    steps: list[SanityStep] = []
    maps: list[Tensor] = []
    with torch.random.fork_rng(devices=devices):
        for k, group in enumerate(groups):
            torch.manual_seed(seed * 1009 + k)
            _reinit(clone.module, group, gen)
            clone.module.eval()
            m = attribution_maps(clone, batch, [target], fn, options)[0]
            m = torch.nan_to_num(m, nan=0.0, posinf=0.0, neginf=0.0)
            maps.append(m)
            steps.append(SanityStep(tuple(group), _spearman(original, m), _ssim(original, m)))
    return SanityResult(name, tuple(steps), original, tuple(maps), threshold)
