"""Objectives: what the synthesis loop *maximizes*, composed with arithmetic.

    objective = 2.0 * channel("relu4_3", 42) - 1e-3 * l2()
    objective.layers       # frozenset({"relu4_3"}): the probe hooks only these
    repr(objective)        # "2.0 * channel('relu4_3', 42) - 0.001 * l2()"

An objective maps one step's `Inputs` (the captured activations, the image, the model's
output) to a scalar tensor. Rewards (a channel's mean, a class logit) are maximized as they
are; penalties and distances (`l2`, `total_variation`, `feature_match`, `gram_match`) are
non-negative and enter with a minus sign. `+`, `-`, unary `-`, and `*` and `/` by numbers build
weighted sums; Python's `sum(...)` works too. Every objective declares the layers it needs, and
a sum needs the union of its terms' layers. `OUTPUT` names the model's output (class scores),
which needs the whole forward pass; any other set of layers lets the forward stop after the
deepest one.

Batches: with `batch=None` a term averages over the images of the batch; `batch=i` reads
image `i` only (one image per channel in the atlas's grid mode). `diversity` compares the
images of a batch with each other.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from convscope.errors import UserInputError
from convscope.models.base import Preprocess
from convscope.synthesize.transforms import gaussian_blur

__all__ = [
    "OUTPUT",
    "Inputs",
    "Objective",
    "Window",
    "alpha_norm",
    "blur_input_each_step",
    "channel",
    "class_logit",
    "class_prob",
    "custom",
    "deepdream",
    "direction",
    "diversity",
    "feature_match",
    "gram_match",
    "gram_matrix",
    "l1",
    "l2",
    "neuron",
    "total",
    "total_variation",
]

OUTPUT = "<output>"
"""The pseudo-layer name of the model's output (class scores)."""


@dataclass(frozen=True)
class Window:
    """Where a tile lies when the loop optimizes an image tile by tile: the whole image
    (`height`×`width`) was rolled by (`dy`, `dx`) pixels and the tile is rows `y0:y1`,
    columns `x0:x1` of the rolled image. Objectives with targets on the whole image's grid
    (content features, region masks) take the tile's part of them with `crop`.

    With a halo, `core` (cy0, cy1, cx0, cx1), inside the box, is the part of the tile that
    counts: the box adds a margin of context around it, so the features over the core are the
    whole image's own, and the cores of one step's tiles cover the image once."""

    height: int
    width: int
    dy: int
    dx: int
    y0: int
    y1: int
    x0: int
    x1: int
    core: tuple[int, int, int, int] | None = None

    @property
    def fraction(self) -> float:
        """The (core of the) tile's share of the whole image's pixels."""
        y0, y1, x0, x1 = self.core or (self.y0, self.y1, self.x0, self.x1)
        return (y1 - y0) * (x1 - x0) / (self.height * self.width)

    def core_weights(self, size: tuple[int, int]) -> Tensor | None:
        """(1, 1, *size): 1 over the core and 0 over the halo, at a map of the tile at `size`
        (a layer's features), area-averaged; None without a halo (everything counts)."""
        if self.core is None:
            return None
        cy0, cy1, cx0, cx1 = self.core
        m = torch.zeros(1, 1, self.y1 - self.y0, self.x1 - self.x0)
        m[..., cy0 - self.y0 : cy1 - self.y0, cx0 - self.x0 : cx1 - self.x0] = 1.0
        return F.interpolate(m, size=size, mode="area") if tuple(m.shape[-2:]) != size else m

    def crop(self, t: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """The part of `t` (..., h, w), a map over the whole image at any resolution (e.g. a
        layer's features at its stride), under this tile: rolled and cut in proportion.
        `size` (the tile's own map size at that resolution) fixes the result's size, the
        start moved in where rounding would run past the edge."""
        h, w = int(t.shape[-2]), int(t.shape[-1])
        sy, sx = h / self.height, w / self.width
        rolled = torch.roll(t, shifts=(round(self.dy * sy), round(self.dx * sx)), dims=(-2, -1))
        if size is None:
            size = (
                max(1, round((self.y1 - self.y0) * sy)),
                max(1, round((self.x1 - self.x0) * sx)),
            )
        th, tw = min(size[0], h), min(size[1], w)
        y = min(max(0, round(self.y0 * sy)), h - th)
        x = min(max(0, round(self.x0 * sx)), w - tw)
        return rolled[..., y : y + th, x : x + tw]


@dataclass(frozen=True)
class Inputs:
    """What an objective sees at one step."""

    acts: Mapping[str, Tensor]  # layer (as named in the objective) → (B, C, H, W) or (B, D)
    image: Tensor  # (B, 3, H, W) in [0, 1]: the parameterized image, before the transforms
    output: Tensor | None = None  # the model's output, when an objective needs OUTPUT
    preprocess: Preprocess | None = None  # the model's, for `model_input`
    window: Window | None = None  # where the image lies in the whole one, when tiled
    total: Tensor | None = None  # a term's statistic summed over every tile (see `Objective`)

    @functools.cached_property
    def model_input(self) -> Tensor:
        """(B, 3, H, W): `image` normalized as the model's preprocessing does (computed only
        when an objective asks)."""
        return self.image if self.preprocess is None else self.preprocess.normalize(self.image)

    def act(self, layer: str) -> Tensor:
        if layer == OUTPUT:
            if self.output is None:
                raise UserInputError("the model's output was not computed for this objective.")
            return self.output
        if layer not in self.acts:
            raise UserInputError(f"layer {layer!r} produced no activation in this step.")
        return self.acts[layer]


def _number(c: float) -> str:
    return repr(float(c))


class Objective:
    """A differentiable scalar to maximize: a weighted sum of named building blocks."""

    def __init__(self, terms: Sequence[tuple[float, _Leaf]]) -> None:
        self._terms = tuple((float(c), t) for c, t in terms if c != 0.0 or len(terms) == 1)

    # ---- what it needs and computes -------------------------------------------------------
    @property
    def terms(self) -> tuple[tuple[float, _Leaf], ...]:
        """(weight, building block) pairs; the value is their weighted sum."""
        return self._terms

    @property
    def layers(self) -> frozenset[str]:
        return frozenset(layer for _, t in self._terms for layer in t.layers)

    @property
    def needs_output(self) -> bool:
        return OUTPUT in self.layers

    def __call__(self, inputs: Inputs) -> Tensor:
        return self.evaluate(inputs)[0]

    @property
    def has_statistics(self) -> bool:
        """Whether a term needs statistics over the whole image when it is tiled."""
        return any(t.stat is not None for _, t in self._terms)

    def statistics(self, inputs: Inputs) -> dict[int, Tensor]:
        """Each statistic term's per-tile statistic (term index → tensor), to be summed over
        the tiles of a step and handed back to `evaluate` as `totals`."""
        return {k: t.stat(inputs) for k, (_, t) in enumerate(self._terms) if t.stat is not None}

    def evaluate(
        self, inputs: Inputs, totals: Mapping[int, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The value, and each term's *loss* (minus its weighted value, so that penalties
        read as positive numbers), keyed by the term's label or repr.

        Tiled (`inputs.window` set), the values of the tiles of one step add up to the whole
        image's: a term that does not handle windows itself (a mean over positions) is
        weighted by the tile's share of the pixels; `feature_match` normalizes by the whole
        target; a term with a statistic (`gram_match`, whose Gram matrix is not a sum of the
        tiles' losses) reads its statistic summed over all the tiles from `totals` (computed
        in a first pass, `statistics`) and gives this tile's share of the whole image's loss,
        with this tile's gradient."""
        value: Tensor | None = None
        losses: dict[str, Tensor] = {}
        window = inputs.window
        for k, (c, t) in enumerate(self._terms):
            if totals is not None and k in totals:
                v = c * t.fn(dataclasses.replace(inputs, total=totals[k]))
            else:
                v = c * t.fn(inputs)
            if window is not None and not t.windowed:
                v = v * window.fraction
            value = v if value is None else value + v
            key = t.label or t.text
            losses[key] = losses[key] - v.detach() if key in losses else -v.detach()
        assert value is not None
        return value, losses

    # ---- algebra -----------------------------------------------------------------------------
    def __add__(self, other: Objective | float) -> Objective:
        if isinstance(other, Objective):
            return Objective([*self._terms, *other._terms])
        if isinstance(other, (int, float)) and other == 0:
            return self  # so that sum([...]) starts from 0
        return NotImplemented

    __radd__ = __add__

    def __neg__(self) -> Objective:
        return Objective([(-c, t) for c, t in self._terms])

    def __sub__(self, other: Objective | float) -> Objective:
        if isinstance(other, Objective):
            return self + (-other)
        if isinstance(other, (int, float)) and other == 0:
            return self
        return NotImplemented

    def __rsub__(self, other: float) -> Objective:
        if isinstance(other, (int, float)) and other == 0:
            return -self
        return NotImplemented

    def __mul__(self, k: float) -> Objective:
        if isinstance(k, bool) or not isinstance(k, (int, float)):
            return NotImplemented
        if not math.isfinite(k):
            raise UserInputError(f"an objective's weight must be a finite number, got {k}.")
        return Objective([(c * k, t) for c, t in self._terms])

    __rmul__ = __mul__

    def __truediv__(self, k: float) -> Objective:
        if isinstance(k, bool) or not isinstance(k, (int, float)):
            return NotImplemented
        if k == 0 or not math.isfinite(k):
            raise UserInputError(f"cannot divide an objective by {k}.")
        return self * (1.0 / k)

    def named(self, label: str) -> Objective:
        """The same objective, its terms reported together under `label` in progress."""
        return Objective([(c, dataclasses.replace(t, label=label)) for c, t in self._terms])

    def __repr__(self) -> str:
        groups: list[tuple[str, list[tuple[float, _Leaf]]]] = []
        for c, t in self._terms:
            if groups and t.label and groups[-1][0] == t.label:
                groups[-1][1].append((c, t))
            else:
                groups.append((t.label, [(c, t)]))
        parts: list[str] = []
        for label, terms in groups:
            if label:
                parts.append(f"{label}=({_plain(terms)})")
            else:
                parts.append(_plain(terms))
        out = parts[0]
        for part in parts[1:]:
            out += f" - {part[1:]}" if part.startswith("-") else f" + {part}"
        return out


def _plain(terms: Sequence[tuple[float, _Leaf]]) -> str:
    parts: list[str] = []
    for k, (c, t) in enumerate(terms):
        a = abs(c)
        body = t.text if a == 1.0 else f"{_number(a)} * {t.text}"
        if k == 0:
            parts.append(("-" if c < 0 else "") + body)
        else:
            parts.append(f" {'-' if c < 0 else '+'} {body}")
    return "".join(parts)


@dataclass(frozen=True)
class _Leaf:
    """One building block: a function of the step's inputs, the layers it reads, its text.
    `stat` (for tiles): a per-tile statistic that sums over tiles to the whole image's;
    `windowed`: the function gives a tile's share of the whole image's value itself."""

    fn: Callable[[Inputs], Tensor]
    layers: frozenset[str]
    text: str
    label: str = ""
    stat: Callable[[Inputs], Tensor] | None = None
    windowed: bool = False


def _objective(fn: Callable[[Inputs], Tensor], layers: Iterable[str], text: str) -> Objective:
    return Objective([(1.0, _Leaf(fn, frozenset(layers), text))])


def custom(fn: Callable[[Inputs], Tensor], layers: Iterable[str], text: str) -> Objective:
    """Your own building block: `fn(inputs)` returns a scalar tensor to maximize from the
    activations of `layers` (names or aliases; `OUTPUT` for the model's output); `text` is how
    it prints (e.g. "guide('relu4_3')"). It composes like the built-in ones."""
    return _objective(fn, layers, text)


def total(objectives: Iterable[Objective]) -> Objective:
    """The sum of several objectives (as `sum(...)`, but an empty sum is an error)."""
    items = list(objectives)
    if not items:
        raise UserInputError("there are no objectives to add.")
    out = items[0]
    for o in items[1:]:
        out = out + o
    return out


def _args(*values: Any, **named: Any) -> str:
    shown = [repr(v) for v in values]
    shown += [f"{k}={v!r}" for k, v in named.items() if v is not None]
    return ", ".join(shown)


def _pick(t: Tensor, batch: int | None) -> Tensor:
    """The batch element `batch` (kept as a batch of one), or all of them."""
    if batch is None:
        return t
    if not -t.shape[0] <= batch < t.shape[0]:
        raise UserInputError(f"batch index {batch} is out of range for {t.shape[0]} images.")
    return t[batch : batch + 1]


def _check_channel(act: Tensor, c: int, layer: str) -> None:
    n = int(act.shape[1])
    if not 0 <= c < n:
        raise UserInputError(f"channel {c} is out of range 0..{n - 1} for layer {layer}.")


# ---- rewards ------------------------------------------------------------------------------------
def class_logit(c: int, *, batch: int | None = None) -> Objective:
    """The model's output (logit) for class `c`, averaged over the batch."""

    def fn(inputs: Inputs) -> Tensor:
        out = _pick(inputs.act(OUTPUT), batch)
        _check_channel(out, c, "the output")
        return out[:, c].mean()

    return _objective(fn, [OUTPUT], f"class_logit({_args(c, batch=batch)})")


def class_prob(c: int, *, batch: int | None = None) -> Objective:
    """The softmax probability of class `c`, averaged over the batch."""

    def fn(inputs: Inputs) -> Tensor:
        out = _pick(inputs.act(OUTPUT), batch)
        _check_channel(out, c, "the output")
        return out.float().softmax(dim=1)[:, c].mean()

    return _objective(fn, [OUTPUT], f"class_prob({_args(c, batch=batch)})")


def channel(layer: str, c: int, *, batch: int | None = None) -> Objective:
    """The mean activation of channel `c` of `layer` over its positions (and the batch)."""

    def fn(inputs: Inputs) -> Tensor:
        act = _pick(inputs.act(layer), batch)
        _check_channel(act, c, layer)
        return act[:, c].mean()

    return _objective(fn, [layer], f"channel({_args(layer, c, batch=batch)})")


def neuron(
    layer: str, c: int, y: int | None = None, x: int | None = None, *, batch: int | None = None
) -> Objective:
    """One unit: channel `c` of `layer` at row `y`, column `x` of its output (the centre
    unit by default; layers without positions, such as a linear layer, have one unit per
    channel)."""

    def fn(inputs: Inputs) -> Tensor:
        act = _pick(inputs.act(layer), batch)
        _check_channel(act, c, layer)
        if act.dim() == 2:
            return act[:, c].mean()
        h, w = int(act.shape[-2]), int(act.shape[-1])
        yy = h // 2 if y is None else y
        xx = w // 2 if x is None else x
        if not (0 <= yy < h and 0 <= xx < w):
            raise UserInputError(
                f"position {yy},{xx} is outside layer {layer}'s {h}x{w} output "
                f"(y in 0..{h - 1}, x in 0..{w - 1})."
            )
        return act[:, c, yy, xx].mean()

    return _objective(fn, [layer], f"neuron({_args(layer, c, y, x, batch=batch)})")


def direction(
    layer: str, vector: Tensor | Sequence[float], *, batch: int | None = None
) -> Objective:
    """The cosine similarity between `layer`'s activation vector at each position and
    `vector` (C,), averaged over positions (a direction in activation space, as in lucid)."""
    v = torch.as_tensor(vector, dtype=torch.float32).detach().clone()
    if v.dim() != 1 or v.numel() == 0:
        raise UserInputError(f"a direction must be a vector (C,), got shape {tuple(v.shape)}.")

    def fn(inputs: Inputs) -> Tensor:
        act = _pick(inputs.act(layer), batch)
        if act.shape[1] != v.numel():
            raise UserInputError(
                f"the direction has {v.numel()} values but layer {layer} has {act.shape[1]} "
                "channels."
            )
        shape = (1, -1) + (1,) * (act.dim() - 2)
        return F.cosine_similarity(act, v.to(act).view(shape), dim=1).mean()

    return _objective(fn, [layer], f"direction({_args(layer, f'<{v.numel()} values>')})")


def deepdream(layer: str, channels: Sequence[int] | None = None) -> Objective:
    """DeepDream's objective (Mordvintsev et al. 2015): the mean of the squared activations of
    `layer` (of `channels` only, when given), so whatever the layer sees is amplified."""
    chosen = None if channels is None else [int(c) for c in channels]

    def fn(inputs: Inputs) -> Tensor:
        act = inputs.act(layer)
        if chosen is not None:
            for c in chosen:
                _check_channel(act, c, layer)
            act = act[:, chosen]
        return act.pow(2).mean()

    text = f"deepdream({_args(layer, channels=chosen)})"
    return _objective(fn, [layer], text)


def diversity(layer: str) -> Objective:
    """The batch penalty of Olah et al. 2017, as a reward: minus the mean cosine similarity
    between the Gram matrices of every pair of images in the batch, so that adding
    `w * diversity(layer)` pushes the images apart (0 for a batch of one)."""

    def fn(inputs: Inputs) -> Tensor:
        act = inputs.act(layer)
        b = int(act.shape[0])
        if b < 2:
            return act.sum() * 0.0
        grams = F.normalize(gram_matrix(act).flatten(1), dim=1)  # (B, C·C)
        sims = grams @ grams.t()  # (B, B)
        off = sims.sum() - sims.diagonal().sum()
        return -off / (b * (b - 1))

    return _objective(fn, [layer], f"diversity({layer!r})")


# ---- matching -----------------------------------------------------------------------------------
def gram_matrix(act: Tensor, mask: Tensor | None = None) -> Tensor:
    """(B, C, H, W) → (B, C, C): G[c, d] = Σ_p F[c, p] F[d, p] / (H·W), the channels'
    co-activation averaged over positions (so it does not grow with the image's size).

    With a `mask` (B or 1, 1, H, W) of weights m_p ≥ 0 at the features' resolution, the
    average is over the masked positions only: G = Σ_p m_p F[:, p] F[:, p]ᵀ / Σ_p m_p (zero
    where the mask is empty)."""
    if act.dim() != 4:
        raise UserInputError(f"a Gram matrix needs (B, C, H, W) features, got {tuple(act.shape)}.")
    b, c, h, w = act.shape
    f = act.reshape(b, c, h * w)
    if mask is None:
        return torch.bmm(f, f.transpose(1, 2)) / (h * w)
    if mask.dim() != 4 or mask.shape[1] != 1 or tuple(mask.shape[-2:]) != (h, w):
        raise UserInputError(
            f"a Gram mask must be (B, 1, {h}, {w}) for these features, got {tuple(mask.shape)}."
        )
    m = mask.to(f).reshape(mask.shape[0], 1, h * w)  # (B, 1, HW)
    weight = m.sum(dim=2, keepdim=True).clamp(min=1e-12)  # (B, 1, 1)
    return torch.bmm(f * m, f.transpose(1, 2)) / weight


def _relative(got: Tensor, want: Tensor) -> Tensor:
    """||got − want||² / ||want||² (per batch element, then averaged)."""
    b = got.shape[0]
    diff = (got - want).reshape(b, -1).pow(2).sum(dim=1)
    norm = want.reshape(want.shape[0], -1).pow(2).sum(dim=1).clamp(min=1e-12)
    return (diff / norm).mean()


def feature_match(layer: str, target: Tensor) -> Objective:
    """A penalty: how far `layer`'s activation is from `target` (broadcast over the batch), as
    the relative squared error ||F − F₀||² / ||F₀||² (Mahendran & Vedaldi's normalization;
    0 when equal, 1 for an all-zero activation). When the loop works tile by tile, the
    target is cut to the tile (`Window.crop`)."""
    want = target.detach().clone()
    norm = want.reshape(want.shape[0], -1).pow(2).sum(dim=1).clamp(min=1e-12)  # (B,) or (1,)

    def fn(inputs: Inputs) -> Tensor:
        act = inputs.act(layer)
        goal = want
        tiled = inputs.window is not None and want.dim() == 4
        if tiled:
            assert inputs.window is not None
            goal = inputs.window.crop(want, (int(act.shape[-2]), int(act.shape[-1])))
        if act.shape[1:] != goal.shape[1:]:
            raise UserInputError(
                f"layer {layer} gives {tuple(act.shape[1:])}, but the target features are "
                f"{tuple(goal.shape[1:])}; give the image at the size the target was made at."
            )
        if not tiled:
            return _relative(act, goal.to(act).expand_as(act))
        # A tile's share: its (core's) squared error over the whole target's energy.
        assert inputs.window is not None
        sq = (act - goal.to(act)).pow(2)
        core = inputs.window.core_weights((int(act.shape[-2]), int(act.shape[-1])))
        if core is not None:
            sq = sq * core.to(sq)
        diff = sq.reshape(act.shape[0], -1).sum(dim=1)
        return (diff / norm.to(act)).mean()

    return Objective(
        [(1.0, _Leaf(fn, frozenset([layer]), f"feature_match({layer!r})", windowed=True))]
    )


def _as_mask(mask: Tensor) -> Tensor:
    """A region mask (H, W), (1, H, W) or (1, 1, H, W) of weights in [0, 1] → (1, 1, H, W)."""
    m = mask.detach().float()
    while m.dim() < 4:
        m = m[None]
    if m.dim() != 4 or m.shape[0] != 1 or m.shape[1] != 1:
        raise UserInputError(f"a region mask must be (H, W), got shape {tuple(mask.shape)}.")
    if not bool(torch.isfinite(m).all()) or float(m.min()) < 0 or float(m.max()) > 1:
        raise UserInputError("a region mask must hold weights between 0 and 1.")
    return m.clone()


def _mask_at(mask: Tensor, inputs: Inputs, size: tuple[int, int]) -> Tensor:
    """The region mask (1, 1, H, W) over the whole image → the mask of this step's features
    (1, 1, *size): cut to the tile, then area-averaged to the features' resolution."""
    m = mask
    if inputs.window is not None:
        m = inputs.window.crop(m)
    elif tuple(m.shape[-2:]) != tuple(inputs.image.shape[-2:]):
        m = F.interpolate(m, size=tuple(inputs.image.shape[-2:]), mode="bilinear")
    return F.interpolate(m, size=size, mode="area") if tuple(m.shape[-2:]) != size else m


def gram_match(layer: str, target_gram: Tensor, *, mask: Tensor | None = None) -> Objective:
    """A penalty: the relative squared distance between `layer`'s Gram matrix
    (`gram_matrix`) and `target_gram` (C, C) or (1, C, C), as in Gatys et al.'s style loss.

    `mask` (H, W), weights in [0, 1] over the image, restricts the Gram matrix to a region
    (the positions under the mask, area-averaged down to the layer's resolution), so that a
    style applies there only; an image with none of the region adds nothing.

    Tiled, the Gram matrix is the whole image's: a first pass sums Σ m F Fᵀ and Σ m over the
    tiles (`Objective.statistics`), and each tile then gets its share of the whole loss and
    the gradient of the whole loss with respect to its own features (the loss linearized in
    the tile's statistic), so a tiled step equals a whole-image step up to the tiles' edges."""
    want = target_gram.detach().clone()
    if want.dim() == 2:
        want = want[None]
    region = None if mask is None else _as_mask(mask)

    def sums(inputs: Inputs) -> tuple[Tensor, Tensor]:
        """(B, C, C) Σ_p m_p F_p F_pᵀ and (B,) Σ_p m_p over this image (or tile)."""
        act = inputs.act(layer)
        if act.dim() != 4:
            raise UserInputError(
                f"a Gram matrix needs (B, C, H, W) features, got {tuple(act.shape)}."
            )
        b, c, h, w = act.shape
        if c != want.shape[-1]:
            raise UserInputError(
                f"layer {layer} has {c} channels, but the target Gram matrix is "
                f"{tuple(want.shape[1:])}."
            )
        f = act.reshape(b, c, h * w)
        core = None if inputs.window is None else inputs.window.core_weights((h, w))
        if region is None and core is None:
            return torch.bmm(f, f.transpose(1, 2)), torch.full((b,), float(h * w)).to(act)
        m = torch.ones(1, 1, h, w).to(act)
        if region is not None:
            m = _mask_at(region.to(act), inputs, (h, w))
        if core is not None:
            m = m * core.to(act)
        m = m.reshape(-1, 1, h * w).expand(b, 1, h * w)
        return torch.bmm(f * m, f.transpose(1, 2)), m.sum(dim=(1, 2))

    def stat(inputs: Inputs) -> Tensor:
        s, n = sums(inputs)
        return torch.cat([s.flatten(1), n[:, None]], dim=1).detach()  # (B, C·C + 1)

    def fn(inputs: Inputs) -> Tensor:
        s, n = sums(inputs)
        goal = want.to(s)
        if inputs.total is None:  # the whole image (or a tile on its own)
            if float(n.sum()) <= 0.0:
                return s.sum() * 0.0
            loss = _relative(s / n.clamp(min=1e-12)[:, None, None], goal.expand_as(s))
            window = inputs.window
            return loss if window is None else loss * window.fraction
        c = s.shape[-1]
        total = inputs.total.to(s)
        s_all = total[:, :-1].reshape(-1, c, c)  # (B, C, C), over every tile
        n_all = total[:, -1]  # (B,)
        if float(n_all.sum()) <= 0.0:
            return s.sum() * 0.0
        b = s_all.shape[0]
        g_all = s_all / n_all.clamp(min=1e-12)[:, None, None]
        a2 = goal.reshape(goal.shape[0], -1).pow(2).sum(dim=1).clamp(min=1e-12)  # ||A||²
        loss = ((g_all - goal).reshape(b, -1).pow(2).sum(dim=1) / a2).mean()
        grad = 2 * (g_all - goal) / (n_all.clamp(min=1e-12) * a2 * b)[:, None, None]
        share = n.sum() / n_all.sum().clamp(min=1e-12)  # this tile's part of the positions
        return loss * share + (grad * (s - s_all * share)).sum()

    text = f"gram_match({layer!r})" if mask is None else f"gram_match({layer!r}, mask=<region>)"
    return Objective([(1.0, _Leaf(fn, frozenset([layer]), text, stat=stat, windowed=True))])


# ---- image priors (penalties) -------------------------------------------------------------------
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPACES = ("model", "imagenet", "pixel")


def _check_space(space: str) -> None:
    if space not in SPACES:
        raise UserInputError(f"space must be one of {', '.join(SPACES)}, got {space!r}.")


def _image(inputs: Inputs, space: str) -> Tensor:
    if space == "model":
        return inputs.model_input
    if space == "imagenet":  # the units of CS231n's and most papers' settings, for any model
        x = inputs.image
        mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std
    return inputs.image - 0.5


def l2(space: str = "model") -> Objective:
    """A penalty: the squared L2 norm ||x||² of the image, per image (averaged over the
    batch). `space="model"`: the model's normalized input (0 is its mean colour);
    "imagenet": the image normalized with ImageNet's mean and std, as CS231n's λ||I||² is,
    whatever the model; "pixel": the [0, 1] image minus mid-gray."""
    _check_space(space)

    def fn(inputs: Inputs) -> Tensor:
        x = _image(inputs, space)
        return x.flatten(1).pow(2).sum(dim=1).mean()

    return _objective(fn, [], "l2()" if space == "model" else f"l2({space!r})")


def l1(space: str = "model") -> Objective:
    """A penalty: the L1 norm Σ|x| of the image, per image (see `l2` for `space`)."""
    _check_space(space)

    def fn(inputs: Inputs) -> Tensor:
        return _image(inputs, space).flatten(1).abs().sum(dim=1).mean()

    return _objective(fn, [], "l1()" if space == "model" else f"l1({space!r})")


def alpha_norm(alpha: float = 6.0, space: str = "model") -> Objective:
    """A penalty: Σ|x|^α / (number of values), the α-norm prior of Mahendran & Vedaldi 2015
    (α = 6 keeps the image in range without flattening it)."""
    if not (math.isfinite(alpha) and alpha >= 1):
        raise UserInputError(f"alpha must be a number of at least 1, got {alpha}.")
    _check_space(space)

    def fn(inputs: Inputs) -> Tensor:
        return _image(inputs, space).abs().pow(alpha).mean()

    return _objective(fn, [], f"alpha_norm({alpha!r})")


def total_variation(beta: float = 2.0) -> Objective:
    """A penalty: the total variation of the [0, 1] image, the mean over pixels of
    ((x[i, j+1] − x[i, j])² + (x[i+1, j] − x[i, j])²)^(β/2) (Mahendran & Vedaldi's V^β;
    β = 2 is the squared gradient, β = 1 the classic TV). The last row and column, which have
    no right or lower neighbour, count their one difference."""
    if not (math.isfinite(beta) and beta > 0):
        raise UserInputError(f"beta must be a positive number, got {beta}.")

    def fn(inputs: Inputs) -> Tensor:
        return _pixel_mean(_tv(inputs.image, beta), inputs)

    text = f"total_variation(beta={beta!r})"
    return Objective([(1.0, _Leaf(fn, frozenset(), text, windowed=True))])


def _tv(x: Tensor, beta: float) -> Tensor:
    """(B, 3, H, W): each pixel's ((Δx)² + (Δy)²)^(β/2), 0 differences past the end."""
    dx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1, 0, 0))  # (B, 3, H, W), 0 at the end
    dy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    sq = dx.pow(2) + dy.pow(2)
    return sq if beta == 2.0 else (sq + 1e-12).pow(beta / 2)


def _pixel_mean(t: Tensor, inputs: Inputs) -> Tensor:
    """The mean of a per-pixel map (B, C, H, W) of the image; tiled, this tile's share of
    the whole image's mean: exact with a halo (the core's sum over the whole image's count),
    in proportion to the tile's pixels without."""
    window = inputs.window
    if window is None:
        return t.mean()
    core = window.core_weights((int(t.shape[-2]), int(t.shape[-1])))
    if core is None:
        return t.mean() * window.fraction
    count = t.shape[0] * t.shape[1] * window.height * window.width
    return (t * core.to(t)).sum() / count


def blur_input_each_step(sigma: float = 0.5) -> Objective:
    """A penalty (lucid's `blur_input_each_step`): half the squared distance between the image
    and its Gaussian blur, the blur held fixed, so each step pulls the image a little towards
    its blurred self."""
    if not (math.isfinite(sigma) and sigma > 0):
        raise UserInputError(f"sigma must be a positive number, got {sigma}.")

    def fn(inputs: Inputs) -> Tensor:
        x = inputs.image
        return 0.5 * (x - gaussian_blur(x, sigma).detach()).pow(2).flatten(1).sum(1).mean()

    return _objective(fn, [], f"blur_input_each_step({sigma!r})")
