"""`ConvModel`: a network together with everything needed to use it correctly.

Preprocessing travels with the model (as torchvision's `Weights.transforms` does), so no code
elsewhere special-cases a model by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor, nn

from convscope.errors import UnknownNameError, UserInputError

__all__ = ["ConvModel", "Prediction", "Preprocess", "WeightSource"]

Interpolation = Literal["bilinear", "bicubic", "nearest"]
_INTERP = {
    "bilinear": TF.InterpolationMode.BILINEAR,
    "bicubic": TF.InterpolationMode.BICUBIC,
    "nearest": TF.InterpolationMode.NEAREST,
}


def check_image_batch(x: Tensor, what: str = "images") -> Tensor:
    """Return `x` as a (B, 3, H, W) float batch, or raise a one-sentence error."""
    if not isinstance(x, Tensor):
        raise UserInputError(f"{what} must be a torch.Tensor, not {type(x).__name__}.")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] != 3:
        raise UserInputError(
            f"{what} must have shape (3, H, W) or (B, 3, H, W), got {tuple(x.shape)}."
        )
    if not x.is_floating_point():
        raise UserInputError(f"{what} must be floats in [0, 1], got dtype {x.dtype}.")
    return x


@dataclass(frozen=True)
class Preprocess:
    """Image (RGB floats in [0, 1]) → model input, and back.

    Two parts: the geometry (resize the short side, then center-crop; either may be None;
    optionally round to 8-bit levels where the model was defined on uint8 input) and a
    per-pixel affine map `(x * scale - mean) / std`, which is differentiable and invertible so
    that pixel-space optimization can run through it.
    """

    resize: int | None = 256
    crop: int | None = 224
    interpolation: Interpolation = "bilinear"
    scale: float = 1.0
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    quantize: bool = False  # round resized pixels to 8-bit levels (models defined on uint8)

    def __post_init__(self) -> None:
        if self.resize is not None and self.resize < 1:
            raise UserInputError(f"resize must be a positive size, got {self.resize}.")
        if self.crop is not None and self.crop < 1:
            raise UserInputError(f"crop must be a positive size, got {self.crop}.")
        if any(s == 0 for s in self.std):
            raise UserInputError("std must not contain zeros.")

    def _stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return mean, std

    def normalize(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) RGB in [0, 1] → model space. Differentiable; never mutates `x`."""
        x = check_image_batch(x)
        mean, std = self._stats(x)
        return (x * self.scale - mean) / std

    def denormalize(self, x: Tensor) -> Tensor:
        """Model space → (B, 3, H, W) RGB (unclamped, so the inverse is exact)."""
        x = check_image_batch(x, "model inputs")
        mean, std = self._stats(x)
        return (x * std + mean) / self.scale

    def geometry(self, image: Tensor) -> Tensor:
        """Resize the short side and center-crop one (3, H, W) or (B, 3, H, W) image."""
        if self.resize is not None:
            h, w = image.shape[-2:]
            s = self.resize / min(h, w)
            # Round the long side (as PIL-based pipelines do) rather than floor it.
            size = [max(1, round(h * s)), max(1, round(w * s))]
            if size != [h, w]:
                image = TF.resize(
                    image, size, interpolation=_INTERP[self.interpolation], antialias=True
                )
                if self.interpolation == "bicubic":
                    image = image.clamp(0.0, 1.0)  # bicubic overshoots
        if self.quantize:
            image = (image * 255).round() / 255
        if self.crop is not None:
            image = TF.center_crop(image, [self.crop, self.crop])
        return image

    def geometry_batch(self, images: Tensor | Sequence[Tensor]) -> Tensor:
        """Images ((3, H, W), (B, 3, H, W) or a list of them, in [0, 1]) → one (B, 3, h, w)
        batch after the geometry (what the model sees). Images of different sizes are allowed
        when the geometry makes them equal."""
        if isinstance(images, Tensor):
            return self.geometry(check_image_batch(images))
        items = [self.geometry(check_image_batch(im)) for im in images]
        if not items:
            raise UserInputError("no images were given.")
        shapes = {tuple(t.shape[-2:]) for t in items}
        if len(shapes) > 1:
            raise UserInputError(
                f"images of different sizes {sorted(shapes)} cannot be batched; set a crop "
                "size, or give them one at a time."
            )
        return torch.cat(items)

    def __call__(self, images: Tensor | Sequence[Tensor]) -> Tensor:
        """Images → a normalized (B, 3, h, w) batch: `normalize(geometry_batch(images))`."""
        return self.normalize(self.geometry_batch(images))


@dataclass(frozen=True)
class WeightSource:
    """Where a model's weights came from."""

    kind: Literal["package", "file", "url", "random", "user", "torchscript"]
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}" if self.detail else self.kind


@dataclass(frozen=True)
class Prediction:
    index: int
    name: str
    prob: float


@dataclass(frozen=True)
class ConvModel:
    """A network in eval mode plus its preprocessing, class names, layer aliases and provenance."""

    name: str
    module: nn.Module
    preprocess: Preprocess
    source: WeightSource
    classes: tuple[str, ...] | None = None
    aliases: Mapping[str, str] = field(default_factory=dict)  # alias -> dotted name
    default_layer: str | None = None  # a late conv layer, for Grad-CAM and demos

    def __post_init__(self) -> None:
        self.module.eval()

    # ---- layers -----------------------------------------------------------------------------
    def layer_names(self) -> list[str]:
        """Torch's dotted names of every submodule, in registration order."""
        return [n for n, _ in self.module.named_modules() if n]

    def resolve(self, name: str) -> str:
        """An alias or dotted name → the dotted name. Unknown names raise with suggestions."""
        if name in self.aliases:
            return self.aliases[name]
        names = self.layer_names()
        if name in names:
            return name
        raise UnknownNameError(
            "layer",
            name,
            [*self.aliases, *names],
            hint=f"`convscope layers {self.name}` lists them.",
        )

    def alias_of(self, dotted: str) -> str | None:
        for alias, target in self.aliases.items():
            if target == dotted:
                return alias
        return None

    # ---- running ----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for p in self.module.parameters():
            return p.device
        for b in self.module.buffers():
            return b.device
        return torch.device("cpu")

    def to(self, device: torch.device | str) -> ConvModel:
        self.module.to(device)
        return self

    def prepare(self, images: Tensor | Sequence[Tensor]) -> Tensor:
        """Images in [0, 1] → a normalized batch on the model's device."""
        return self.preprocess(images).to(self.device)

    def __call__(self, x: Tensor) -> Tensor:
        return self.module(x)  # type: ignore[no-any-return]

    def class_index(self, target: str | int) -> int:
        """A class name (exact, case-insensitive) or index → index."""
        if self.classes is None:
            raise UserInputError(f"model {self.name!r} is not a classifier.")
        n = len(self.classes)
        if isinstance(target, int) or (isinstance(target, str) and target.lstrip("-").isdigit()):
            idx = int(target)
            if not 0 <= idx < n:
                raise UserInputError(f"class index {idx} is out of range 0..{n - 1}.")
            return idx
        lower = [c.lower() for c in self.classes]
        if target.lower() in lower:
            return lower.index(target.lower())
        raise UnknownNameError("class", target, self.classes)

    @torch.inference_mode()
    def classify(self, images: Tensor | Sequence[Tensor], top: int = 5) -> list[list[Prediction]]:
        """Top-`top` predictions for each image (all classes when `top` exceeds their count)."""
        if self.classes is None:
            raise UserInputError(f"model {self.name!r} is not a classifier (it has no classes).")
        if top < 1:
            raise UserInputError(f"top must be at least 1, got {top}.")
        top = min(top, len(self.classes))
        logits = self(self.prepare(images))  # (B, K)
        if logits.dim() != 2 or logits.shape[1] != len(self.classes):
            raise UserInputError(
                f"model {self.name!r} returned shape {tuple(logits.shape)}, "
                f"expected (B, {len(self.classes)})."
            )
        probs = logits.float().softmax(dim=1)
        values, indices = probs.topk(top, dim=1)
        return [
            [
                Prediction(int(i), self.classes[int(i)], float(v))
                for v, i in zip(vs, ix, strict=True)
            ]
            for vs, ix in zip(values, indices, strict=True)
        ]

    def with_module(self, module: nn.Module) -> ConvModel:
        return replace(self, module=module)
