"""Neural style transfer (Gatys, Ecker & Bethge 2016) on the one loop, with neural-style's knobs:

    result = style_transfer(vgg, golden_gate, [starry_night])
    result = style_transfer(vgg, content, [a, b], blend=[3, 7], original_colors=True)
    result = style_transfer(vgg, content, [a, b], masks=[sky, ground], size=1024, tile=512,
                            optimizer="adam")

The image x maximizes −(content_weight · content + style_weight · style + tv_weight · tv)
(+ dream_weight · dream), the terms of `convscope.synthesize.perceptual`, each free of units and
image size: content and style relative errors averaged over their layers, TV in 0–255 levels
averaged over pixels. So the defaults (neural-style's weights 5, 100 and 1e-3) work at any
size and any layer set.

- **Images.** The output's long side is `size` (the content's aspect kept); each style image
  is resized so its long side is `style_scale` × that. With `color_transfer`, each style image
  is first recoloured to the content's palette (`colors.color_transfer`); with
  `original_colors`, the result (and every preview) keeps the content's chroma in YCbCr.
- **Start.** `init`: "content" (the default: measured, it reaches a given loss in far fewer
  steps than noise, and the content term starts at 0), "noise" (the content's mean colour
  plus N(0, 0.1²)), "style" (the first style image, resized) or an image.
- **Optimizer.** L-BFGS (neural-style's default; lr 1, history 100, one evaluation per step)
  or Adam (lr 0.02 in [0, 1] pixels, neural-style's 10 in 0–255 levels... scaled); the image
  is clamped into [0, 1] after each step.
- **Speed.** The forward stops after the deepest layer the losses need (relu5_1, not relu5_3);
  the targets are computed once per scale; `precision="auto"` runs the network in bfloat16
  where the CPU (or GPU) does bfloat16 natively, in float32 elsewhere (the losses are in
  float32 either way).
- **Multiscale.** `multiscale=True` runs coarse to fine: the long side halves down to 256 px
  (512 → 256, 512; 2048 → 256, 512, 1024, 2048), each scale starting from the previous
  result, upsampled, with `steps` steps each; with Adam the moments are carried up too
  (`octaves.resize_optimizer_state`).
- **Tiles.** `tile` optimizes outputs larger than memory allows: each step the image is cut
  into tiles of `tile` px at a random offset (a multiple of the deepest layer's stride), each
  with a halo of half that layer's receptive field around it, and each tile's gradient is
  computed alone. The features over a tile's core are then the whole image's own, the style
  Gram matrices are summed over all the tiles in a first pass, and so a tiled step is the
  whole image's step (tested): no seams, no drift of style between tiles. The output's sides
  are rounded to multiples of that stride. It needs Adam (L-BFGS needs the same loss at every
  evaluation) and a tile no smaller than the deepest layer's receptive field.
- **Masks.** `masks` (one (H, W) weight map in [0, 1] over the content per style) restrict
  each style's Gram matrices to its region; where no mask covers, only the content and TV
  terms act, so the region stays as the content.
- **Blend.** Several styles without masks blend their Gram targets with `blend` weights
  normalized to sum 1 (equal by default), as neural-style's `-style_blend_weights`. With
  masks each style is weighted by its normalized weight times the number of styles.
- **DeepDream.** `dream_weight` adds DeepDream's objective at `dream_layer` (the mean squared
  activation, divided by its value on the content image so the weight is unitless).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from convscope.device import fast_dtype
from convscope.errors import UserInputError, check_number, check_whole
from convscope.events import Progress, ProgressCallback, no_progress
from convscope.models.base import ConvModel, check_image_batch
from convscope.models.pooling import with_pooling
from convscope.synthesize import callbacks as cb
from convscope.synthesize.objectives import Objective, deepdream
from convscope.synthesize.octaves import resize, resize_optimizer_state
from convscope.synthesize.optimize import Run, SynthesisProgress, seeded
from convscope.synthesize.params import ImageParam, PixelImage
from convscope.synthesize.perceptual import (
    CONTENT_LAYERS,
    STYLE_LAYERS,
    StyleTarget,
    blend_weights,
    check_size,
    content_features,
    current_losses,
    perceptual,
    style_grams,
)

__all__ = [
    "INITS",
    "LR",
    "MIN_SCALE",
    "PRECISIONS",
    "StylePlan",
    "StyleResult",
    "choose_precision",
    "multiscale_sizes",
    "output_size",
    "plan_style",
    "run_style",
    "style_transfer",
]

INITS: tuple[str, ...] = ("content", "noise", "style")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
LR: dict[str, float] = {"lbfgs": 1.0, "adam": 0.02}
"""The default learning rate of each optimizer (Adam's in [0, 1] pixels: about 5 levels)."""
MIN_SCALE = 256
"""The long side of multiscale's first scale (or the output's, if smaller)."""
NOISE_SD = 0.1


def output_size(image_hw: tuple[int, int], size: int) -> tuple[int, int]:
    """(H, W) with the long side `size` and the aspect of `image_hw`."""
    h, w = image_hw
    if h >= w:
        return size, max(1, round(w * size / h))
    return max(1, round(h * size / w)), size


def multiscale_sizes(size: tuple[int, int], *, start: int = MIN_SCALE) -> list[tuple[int, int]]:
    """The (H, W) of each scale, coarse to fine: the long side halved until it would fall
    below `start` (the output's own size alone if it is not above `start`)."""
    long = max(size)
    sides = [long]
    while sides[-1] // 2 >= start:
        sides.append(sides[-1] // 2)
    return [output_size(size, s) for s in reversed(sides)]


def choose_precision(precision: str, device: torch.device) -> Literal["fp32", "bf16"]:
    """ "auto" → "bf16" where `device` runs bfloat16 natively (`fast_dtype`), else "fp32";
    "fp32" and "bf16" as given; anything else is an error."""
    if precision not in PRECISIONS:
        raise UserInputError(f"--precision must be auto, fp32 or bf16, got {precision!r}.")
    if precision == "auto":
        return "bf16" if fast_dtype(device) is torch.bfloat16 else "fp32"
    return "bf16" if precision == "bf16" else "fp32"


def _near(n: int, k: int) -> int:
    """The multiple of k nearest to n."""
    return max(k, round(n / k) * k)


def _style_hw(style: Tensor, size: tuple[int, int], scale: float) -> tuple[int, int]:
    """A style image's (h, w) for an output of `size`: its long side `scale` × the output's."""
    side = max(1, round(max(size) * scale))
    return output_size((int(style.shape[-2]), int(style.shape[-1])), side)


def _as_image(x: Tensor, what: str) -> Tensor:
    t = check_image_batch(x, what)
    if t.shape[0] != 1:
        raise UserInputError(f"the {what} must be one image, got a batch of {t.shape[0]}.")
    return t.detach().float().cpu().clamp(0.0, 1.0)


def _masks(masks: Sequence[Tensor] | None, n: int, hw: tuple[int, int]) -> list[Tensor] | None:
    if masks is None:
        return None
    if len(masks) != n:
        raise UserInputError(
            f"there are {len(masks)} masks for {n} style image{'s' if n != 1 else ''}; "
            "give one mask per style."
        )
    out = []
    for k, m in enumerate(masks):
        t = torch.as_tensor(m).detach().float().cpu()
        while t.dim() > 2 and t.shape[0] == 1:
            t = t[0]
        if t.dim() != 2:
            raise UserInputError(f"mask {k + 1} must be one grey image, got {tuple(t.shape)}.")
        if tuple(t.shape) != hw:
            raise UserInputError(
                f"mask {k + 1} is {t.shape[1]}x{t.shape[0]}, but the content image is "
                f"{hw[1]}x{hw[0]}; masks must have the content's size."
            )
        if not bool(torch.isfinite(t).all()) or float(t.min()) < 0 or float(t.max()) > 1:
            raise UserInputError(f"mask {k + 1} must hold values between 0 and 1.")
        out.append(t)
    return out


@dataclass
class StylePlan:
    """Everything `style_transfer` runs, checked and prepared before the first step."""

    model: ConvModel  # with the chosen pooling
    content: Tensor  # (1, 3, H, W) in [0, 1], the caller's size
    styles: list[Tensor]  # (1, 3, h, w) each, recoloured when asked, the caller's size
    sizes: list[tuple[int, int]]  # the output's (H, W) at each scale, coarse to fine
    weights: list[float]  # the styles' normalized blend weights
    masks: list[Tensor] | None  # (H, W) per style over the content, or None
    init: str | Tensor
    content_layers: list[str]
    style_layers: list[str]
    content_weight: float
    style_weight: float
    tv_weight: float
    style_scale: float
    dream_weight: float
    dream_layer: str | None
    optimizer: str
    lr: float
    steps: int
    tile: int | None
    tile_align: int
    tile_halo: int
    precision: Literal["fp32", "bf16"]
    original_colors: bool
    seed: int

    @property
    def total_steps(self) -> int:
        return self.steps * len(self.sizes)

    def _style_images(self, size: tuple[int, int]) -> list[Tensor]:
        return [resize(s, _style_hw(s, size, self.style_scale)) for s in self.styles]

    def objective_at(self, size: tuple[int, int]) -> Objective:
        """The objective at one scale: the targets computed for that size."""
        model = self.model
        content = resize(self.content, size)
        feats = content_features(model, content, self.content_layers)
        images = self._style_images(size)
        if self.masks is None:
            grams = style_grams(model, images, self.style_layers, self.weights)
            targets = [StyleTarget(grams)]
        else:
            targets = [
                StyleTarget(
                    style_grams(model, [img], self.style_layers),
                    w * len(images),
                    resize(m[None, None], size)[0, 0].clamp(0.0, 1.0),
                )
                for img, w, m in zip(images, self.weights, self.masks, strict=True)
            ]
        objective = perceptual(
            content=feats,
            styles=targets,
            content_weight=self.content_weight,
            style_weight=self.style_weight,
            tv_weight=self.tv_weight,
        )
        if self.dream_weight > 0 and self.dream_layer is not None:
            dream = deepdream(self.dream_layer)
            d0 = current_losses(model, content, dream)["loss"]  # −(mean squared activation)
            scale = max(abs(d0), 1e-12)
            objective = objective + (self.dream_weight / scale) * dream.named("dream")
        return objective

    def start_image(self, size: tuple[int, int]) -> Tensor:
        """(1, 3, H, W): the first scale's starting image."""
        if isinstance(self.init, Tensor):
            return resize(self.init, size).clamp(0.0, 1.0)
        if self.init == "content":
            return resize(self.content, size)
        if self.init == "style":
            return resize(self.styles[0], size)
        mean = self.content.mean(dim=(-2, -1), keepdim=True)
        with seeded(self.seed):
            noise = torch.randn(1, 3, *size) * NOISE_SD
        return (mean + noise).clamp(0.0, 1.0)

    def run_at(self, k: int, start: Tensor) -> Run:
        """Scale `k`'s run from the image `start` (resized to the scale)."""
        size = self.sizes[k]
        start = resize(start, size).clamp(0.0, 1.0)
        param = ImageParam(PixelImage(size, init=start), decorrelate=False, activation="none")
        return Run(
            self.model,
            self.objective_at(size),
            param.to(self.model.device),
            steps=self.steps,
            optimizer=self.optimizer,
            lr=self.lr,
            callbacks=[cb.clamp_to_range()],
            tile=self.tile,
            tile_align=self.tile_align,
            tile_halo=self.tile_halo,
            precision=self.precision,
        )


def plan_style(
    model: ConvModel,
    content: Tensor,
    styles: Sequence[Tensor],
    *,
    size: int = 512,
    content_weight: float = 5.0,
    style_weight: float = 100.0,
    tv_weight: float = 1e-3,
    content_layers: Sequence[str] = CONTENT_LAYERS,
    style_layers: Sequence[str] = STYLE_LAYERS,
    style_scale: float = 1.0,
    blend: Sequence[float] | None = None,
    original_colors: bool = False,
    color_transfer: str | None = None,
    init: str | Tensor = "content",
    optimizer: str = "lbfgs",
    lr: float | None = None,
    steps: int = 300,
    seed: int = 0,
    pooling: str = "max",
    masks: Sequence[Tensor] | None = None,
    multiscale: bool = False,
    tile: int | None = None,
    dream_weight: float = 0.0,
    dream_layer: str | None = None,
    precision: str = "auto",
) -> StylePlan:
    """Check every argument and prepare the run (see `style_transfer`), before any step."""
    content_img = _as_image(content, "content image")
    if not styles:
        raise UserInputError("give at least one style image.")
    style_imgs = [_as_image(s, "style image") for s in styles]
    size = check_whole(size, "--size", 16)
    steps = check_whole(steps, "--steps")
    seed = check_whole(seed, "--seed", 0)
    cw = check_number(content_weight, "--content-weight")
    sw = check_number(style_weight, "--style-weight", zero=False)
    tw = check_number(tv_weight, "--tv-weight")
    dw = check_number(dream_weight, "--dream-weight")
    scale = check_number(style_scale, "--style-scale", zero=False)
    weights = blend_weights(blend, len(style_imgs))
    if optimizer not in LR:
        raise UserInputError(f"--optimizer must be lbfgs or adam, got {optimizer!r}.")
    rate = LR[optimizer] if lr is None else check_number(lr, "--lr", zero=False)
    chosen = choose_precision(precision, model.device)
    if isinstance(init, str) and init not in INITS:
        raise UserInputError(f"--init must be content, noise, style or an image, got {init!r}.")
    init_img: str | Tensor = init if isinstance(init, str) else _as_image(init, "--init image")
    c_layers = [str(n) for n in content_layers]
    s_layers = [str(n) for n in style_layers]
    if not s_layers:
        raise UserInputError("--style-layers names no layer.")
    if not c_layers and cw > 0:
        raise UserInputError("--content-layers names no layer; give one or set --content-weight 0.")
    if dw > 0 and not dream_layer:
        raise UserInputError("--dream-weight needs --dream-layer, e.g. --dream-layer relu4_3.")
    for name in [*c_layers, *s_layers, *([dream_layer] if dream_layer else [])]:
        model.resolve(name)
    hw = (int(content_img.shape[-2]), int(content_img.shape[-1]))
    region = _masks(masks, len(style_imgs), hw)
    net = with_pooling(model, pooling)
    out_hw = output_size(hw, size)
    used = [*c_layers, *s_layers, *([dream_layer] if dream_layer and dw > 0 else [])]
    sizes = multiscale_sizes(out_hw, start=MIN_SCALE) if multiscale else [out_hw]
    check_size(net, used, sizes[0], "output at the first scale" if multiscale else "output")
    for img in style_imgs:
        hw_s = _style_hw(img, sizes[0], scale)
        check_size(net, s_layers, hw_s, "style image at this --style-scale")
    align, halo = 1, 0
    if tile is not None:
        tile = check_whole(tile, "--tile", 8)
        if optimizer != "adam":
            raise UserInputError(
                "--tile needs --optimizer adam: L-BFGS needs the same loss at every "
                "evaluation, and tiles at random offsets change it."
            )
        from convscope.probe import receptive_fields

        fields = receptive_fields(net, used, 224)
        need = max((max(f.size) for f in fields.values() if f is not None), default=1)
        align = max((max(f.stride) for f in fields.values() if f is not None), default=1)
        if tile < need:
            raise UserInputError(
                f"--tile {tile} is smaller than the receptive field of the deepest layer "
                f"({need} px); use --tile {need} or more."
            )
        tile -= tile % align
        halo = -(-need // (2 * align)) * align  # half the receptive field, rounded up
        # Sides that are multiples of the stride: every tile's features line up exactly.
        sizes = [(_near(hh, align), _near(ww, align)) for hh, ww in sizes]
    if color_transfer is not None:
        from convscope.synthesize.colors import color_transfer as recolor

        style_imgs = [recolor(s, content_img, color_transfer) for s in style_imgs]
    return StylePlan(
        model=net,
        content=content_img,
        styles=style_imgs,
        sizes=sizes,
        weights=weights,
        masks=region,
        init=init_img,
        content_layers=c_layers,
        style_layers=s_layers,
        content_weight=cw,
        style_weight=sw,
        tv_weight=tw,
        style_scale=scale,
        dream_weight=dw,
        dream_layer=dream_layer if dw > 0 else None,
        optimizer=optimizer,
        lr=rate,
        steps=steps,
        tile=tile,
        tile_align=align,
        tile_halo=halo,
        precision=chosen,
        original_colors=bool(original_colors),
        seed=seed,
    )


@dataclass(frozen=True)
class StyleResult:
    image: Tensor  # (3, H, W) in [0, 1]
    losses: dict[str, float]  # the last step's: loss, content, style, tv (, dream)
    steps: int  # over all scales
    sizes: list[tuple[int, int]]
    precision: str
    model: str
    history: list[float] = field(default_factory=list)  # the last scale's total loss per step

    def report(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "size": [int(self.image.shape[-2]), int(self.image.shape[-1])],
            "scales": [list(s) for s in self.sizes],
            "steps": self.steps,
            "precision": self.precision,
            "losses": {k: round(v, 6) for k, v in self.losses.items()},
        }


def _finish(plan: StylePlan, image: Tensor) -> Tensor:
    """The result as shown: with the content's chroma under `original_colors`."""
    if not plan.original_colors:
        return image
    from convscope.synthesize.colors import original_colors

    return original_colors(image, plan.content)


def _events(
    plan: StylePlan, k: int, every: int | None, on_progress: ProgressCallback
) -> ProgressCallback:
    """Scale `k`'s events as steps of the whole run, with a preview (finished as the result
    is) every `every` steps of the whole run."""
    offset = k * plan.steps
    h, w = plan.sizes[k]

    def emit(event: Progress) -> None:
        if isinstance(event, SynthesisProgress):
            done = event.done + offset
            preview = None
            if event.preview is not None and every is not None and done % every == 0:
                preview = _finish(plan, event.preview)
            event = dataclasses.replace(
                event,
                task=f"style {w}x{h}" if len(plan.sizes) > 1 else "style",
                done=done,
                total=plan.total_steps,
                preview=preview,
            )
        on_progress(event)

    return emit


def run_style(
    plan: StylePlan,
    *,
    on_progress: ProgressCallback = no_progress,
    preview_every: int | None = None,
) -> StyleResult:
    """Run a plan, scale after scale; every `preview_every` steps (counted over all scales)
    a progress event carries the current image."""
    if preview_every is not None and preview_every < 1:
        raise UserInputError(f"preview_every must be at least 1, got {preview_every}.")
    image = plan.start_image(plan.sizes[0])
    state: dict[str, Any] | None = None
    losses: dict[str, float] = {}
    history: list[float] = []
    done = 0
    for k, size in enumerate(plan.sizes):
        run = plan.run_at(k, image)
        carried = None
        if state is not None and plan.optimizer == "adam":
            carried = resize_optimizer_state(state, size)
        with seeded(plan.seed + k + 1):
            result = run.start(
                task="style",
                on_progress=_events(plan, k, preview_every, on_progress),
                preview_every=None if preview_every is None else 1,
                optimizer_state=carried,
            )
        image = result.image
        state = result.optimizer_state
        losses = {"loss": result.history[-1], **result.losses}
        history = result.history
        done += result.steps
    final = _finish(plan, image)[0].clamp(0.0, 1.0)
    return StyleResult(final, losses, done, plan.sizes, plan.precision, plan.model.name, history)


def style_transfer(
    model: ConvModel,
    content: Tensor,
    styles: Sequence[Tensor],
    *,
    size: int = 512,
    content_weight: float = 5.0,
    style_weight: float = 100.0,
    tv_weight: float = 1e-3,
    content_layers: Sequence[str] = CONTENT_LAYERS,
    style_layers: Sequence[str] = STYLE_LAYERS,
    style_scale: float = 1.0,
    blend: Sequence[float] | None = None,
    original_colors: bool = False,
    color_transfer: str | None = None,
    init: str | Tensor = "content",
    optimizer: str = "lbfgs",
    lr: float | None = None,
    steps: int = 300,
    seed: int = 0,
    pooling: str = "max",
    masks: Sequence[Tensor] | None = None,
    multiscale: bool = False,
    tile: int | None = None,
    dream_weight: float = 0.0,
    dream_layer: str | None = None,
    precision: str = "auto",
    preview_every: int | None = None,
    on_progress: ProgressCallback = no_progress,
) -> StyleResult:
    """Stylize `content` (3, H, W) or (1, 3, H, W) in [0, 1] with `styles` (see the module
    docstring for the method and every option).

    Args:
        size: the output's long side in pixels (the content's aspect is kept).
        content_weight, style_weight, tv_weight: the weights of the normalized terms.
        content_layers, style_layers: layer names or aliases (VGG's relu4_2; relu1_1..relu5_1).
        style_scale: each style image's long side relative to the output's.
        blend: one weight per style (normalized to sum 1).
        original_colors: keep the content's chroma (luminance-only transfer).
        color_transfer: "histogram" or "lab": recolour the styles to the content first.
        init: "content", "noise", "style" or an image (resized to the output).
        optimizer, lr, steps: "lbfgs" (lr 1) or "adam" (lr 0.02); steps per scale.
        pooling: "max", or "avg" for Gatys et al.'s average pooling (on a copy of the model).
        masks: one (H, W) map in [0, 1] per style, the content's size.
        multiscale: coarse to fine from 256 px.
        tile: optimize in tiles of this many pixels (with Adam).
        dream_weight, dream_layer: add DeepDream at a layer.
        precision: "auto" (bfloat16 where native), "fp32" or "bf16".
        preview_every: attach the current image to every N-th step's progress event.
    """
    plan = plan_style(
        model,
        content,
        styles,
        size=size,
        content_weight=content_weight,
        style_weight=style_weight,
        tv_weight=tv_weight,
        content_layers=content_layers,
        style_layers=style_layers,
        style_scale=style_scale,
        blend=blend,
        original_colors=original_colors,
        color_transfer=color_transfer,
        init=init,
        optimizer=optimizer,
        lr=lr,
        steps=steps,
        seed=seed,
        pooling=pooling,
        masks=masks,
        multiscale=multiscale,
        tile=tile,
        dream_weight=dream_weight,
        dream_layer=dream_layer,
        precision=precision,
    )
    return run_style(plan, on_progress=on_progress, preview_every=preview_every)
