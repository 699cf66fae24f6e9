"""Train a feed-forward style network (Johnson et al. 2016) against a loss network, on one
process (checkpoints, resume and data-parallel training are to come):

    result = train_stylenet(vgg, [starry], contents, steps=2000)
    result = train_stylenet(vgg, [a, b, c, d], contents, norm="conditional")   # N styles

- **Losses.** Those of `convscope.synthesize.perceptual`, written once: content at relu2_2
  (the relative error of the features of the stylized batch against the content batch's),
  style Grams at relu1_2, relu2_2, relu3_3, relu4_3 against targets computed once per style
  image, and TV in 0–255 levels; loss = content_weight · content + style_weight · style +
  tv_weight · tv. The forward of the loss network stops at its deepest needed layer and runs in
  bfloat16 where the CPU does so natively (`precision`).
- **Data.** Each step takes `batch` content images at random (from `contents`, any sizes),
  each resized so its short side is `size` and cropped to `size`×`size` at random.
- **Styles.** With N styles (norm "conditional"), each step trains one style, drawn at random,
  as Dumoulin et al. do. `style_size` resizes each style image's long side first (the style
  scale: the Grams describe the style's patterns at that size); by default, `size`.
- **Determinism.** The initial weights come from `seed` (inside `torch.random.fork_rng`, so
  the caller's random state is left alone) and the batches and crops from a generator seeded
  with it: the same seed on the same machine gives the same network.
- The loss network is left as it was (its `requires_grad` flags restored).

The default weights (content 10, style 10, TV 1e-4 on the normalized terms) are provisional,
from two short runs (300 steps at 128 px, batch 4, Starry Night, ten bundled photos): with
content 1 : style 10 the content was lost, with 1 : 1 it was kept and the style showed. They
will be set from the longer runs that train the shipped model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from convscope.errors import UserInputError, check_number, check_whole
from convscope.events import Progress, ProgressCallback, no_progress
from convscope.models.base import ConvModel, check_image_batch
from convscope.probe import Probe
from convscope.stylenet.net import MIN_SIDE, Norm, TransformerNet
from convscope.synthesize.objectives import Inputs, Objective
from convscope.synthesize.octaves import resize
from convscope.synthesize.perceptual import StyleTarget, check_size, perceptual, style_grams
from convscope.synthesize.recipes.style import choose_precision, output_size

__all__ = ["CONTENT_LAYER", "STYLE_LAYERS", "StyleNetResult", "train_stylenet"]

CONTENT_LAYER = "relu2_2"
STYLE_LAYERS: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")


@dataclass
class StyleNetResult:
    """The trained network (in eval mode), each step's losses, and the configuration."""

    net: TransformerNet
    history: list[dict[str, float]]  # per step: loss, content, style, tv, and the style index
    config: dict[str, Any] = field(default_factory=dict)


def _crop(image: Tensor, size: int, g: torch.Generator) -> Tensor:
    """(1, 3, size, size): short side resized to `size`, then a random square crop."""
    h, w = int(image.shape[-2]), int(image.shape[-1])
    scale = size / min(h, w)
    hw = (max(size, round(h * scale)), max(size, round(w * scale)))
    x = resize(image, hw).clamp(0.0, 1.0)
    y0 = int(torch.randint(hw[0] - size + 1, (1,), generator=g))
    x0 = int(torch.randint(hw[1] - size + 1, (1,), generator=g))
    return x[..., y0 : y0 + size, x0 : x0 + size]


def train_stylenet(
    loss_model: ConvModel,
    styles: Sequence[Tensor],
    contents: Sequence[Tensor],
    *,
    size: int = 256,
    batch: int = 4,
    steps: int = 2000,
    lr: float = 1e-3,
    content_weight: float = 10.0,
    style_weight: float = 10.0,
    tv_weight: float = 1e-4,
    content_layer: str = CONTENT_LAYER,
    style_layers: Sequence[str] = STYLE_LAYERS,
    style_size: int | None = None,
    norm: Norm = "instance",
    seed: int = 0,
    precision: str = "auto",
    on_progress: ProgressCallback = no_progress,
) -> StyleNetResult:
    """Train a style network for `styles` ((3, h, w) or (1, 3, h, w) in [0, 1] each) on
    `contents` (images of any size); see the module docstring."""
    if not styles:
        raise UserInputError("give at least one style image.")
    if not contents:
        raise UserInputError("there are no content images to train on.")
    if norm != "conditional" and len(styles) > 1:
        raise UserInputError(f"{len(styles)} styles need --norm conditional, not {norm!r}.")
    size = check_whole(size, "--size", MIN_SIDE)
    batch = check_whole(batch, "--batch", 1)
    steps = check_whole(steps, "--steps", 1)
    seed = check_whole(seed, "--seed", 0)
    rate = check_number(lr, "--lr", zero=False)
    weights = {
        "content": check_number(content_weight, "--content-weight", zero=True),
        "style": check_number(style_weight, "--style-weight", zero=False),
        "tv": check_number(tv_weight, "--tv-weight", zero=True),
    }
    if style_size is not None:
        style_size = check_whole(style_size, "--style-size", MIN_SIDE)
    layers = [str(n) for n in style_layers]
    if not layers:
        raise UserInputError("--style-layers names no layer.")
    for name in [content_layer, *layers]:
        loss_model.resolve(name)
    check_size(loss_model, [content_layer, *layers], (size, size), "training crop")
    chosen = choose_precision(precision, loss_model.device)
    style_imgs = [check_image_batch(s, "style image")[:1].detach().float().cpu() for s in styles]
    pictures = [check_image_batch(c, "content image")[:1].detach().float().cpu() for c in contents]
    side = style_size or size
    targets = []
    for s in style_imgs:
        hw = output_size((int(s.shape[-2]), int(s.shape[-1])), side)
        check_size(loss_model, layers, hw, "style image at --style-size")
        targets.append(StyleTarget(style_grams(loss_model, [resize(s, hw).clamp(0, 1)], layers)))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = TransformerNet(norm=norm, styles=len(style_imgs) if norm == "conditional" else 1)
    device = loss_model.device
    net = net.to(device).train()
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=rate)
    pre = loss_model.preprocess
    history: list[dict[str, float]] = []
    flags = [(p, p.requires_grad) for p in loss_model.module.parameters()]
    needed = sorted({content_layer, *layers})
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        with Probe(loss_model, needed, detach=False, clone="auto", stop_early=True) as probe:
            for step in range(steps):
                picks = torch.randint(len(pictures), (batch,), generator=g).tolist()
                x = torch.cat([_crop(pictures[k], size, g) for k in picks]).to(device)
                k = int(torch.randint(len(targets), (1,), generator=g)) if len(targets) > 1 else 0
                with torch.no_grad(), _autocast(device, chosen):
                    probe.run(pre.normalize(x))
                    goal = probe.activations[content_layer].float().clone()
                objective = perceptual(
                    content={content_layer: goal},
                    styles=[targets[k]],
                    content_weight=weights["content"],
                    style_weight=weights["style"],
                    tv_weight=weights["tv"],
                )
                y = net(x, style=k if norm == "conditional" else None)
                value, losses = _evaluate(probe, objective, y, loss_model, chosen)
                opt.zero_grad(set_to_none=True)
                (-value).backward()  # type: ignore[no-untyped-call]
                opt.step()
                record = {n: float(v) for n, v in losses.items()}
                record = {"loss": float(-value.detach()), **record}
                history.append({**record, "style_index": float(k)})
                on_progress(Progress("train stylenet", step + 1, steps, "steps", metrics=record))
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    config = {
        "size": size, "batch": batch, "steps": steps, "lr": rate, **{f"{n}_weight": v
        for n, v in weights.items()}, "content_layer": content_layer, "style_layers": layers,
        "style_size": style_size, "norm": norm, "seed": seed, "precision": chosen,
        "loss_model": loss_model.name, "contents": len(pictures), "styles": len(style_imgs),
    }  # fmt: skip
    return StyleNetResult(net.eval(), history, config)


def _autocast(device: torch.device, precision: str) -> torch.autocast:
    return torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16")


def _evaluate(
    probe: Probe, objective: Objective, y: Tensor, model: ConvModel, precision: str
) -> tuple[Tensor, dict[str, Tensor]]:
    """The objective on the stylized batch `y` (B, 3, H, W), through the loss network."""
    with _autocast(y.device, precision):
        probe.run(model.preprocess.normalize(y))
    acts = {n: a.float() for n, a in probe.activations.items()}
    return objective.evaluate(Inputs(acts, y, None, model.preprocess))
