"""Image parameterizations: `nn.Module`s whose `forward()` takes nothing and returns the image
being optimized, (B, 3, H, W) in [0, 1]. Their parameters are what the optimizer changes.

- `PixelImage`: one parameter per pixel and channel.
- `FourierImage`: the image's 2-D spectrum, scaled by 1/frequency (Olah et al. 2017), so
  that a step changes low frequencies as much as high ones: smooth images come easily.
- `ColorDecorrelation`: lucid's colour matrix (the square root of ImageNet's colour
  covariance), so that parameters move along decorrelated colour axes.
- `ModelSpaceImage`: the model's own normalized input as the parameter (as CS231n and
  Yosinski et al. optimize it), shown as pixels.
- `image_param(...)` puts them together: pixels or Fourier, decorrelated or not, with a
  sigmoid or a clamp to keep [0, 1]; `init=` starts from a given image.

Every module can start from an image (its inverse maps the image to its parameters), and a
batch (B > 1) gives several images to optimize at once (for `diversity`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from convscope.errors import UserInputError
from convscope.models.base import Preprocess

__all__ = [
    "COLOR_CORRELATION_SVD_SQRT",
    "COLOR_MEAN",
    "ColorDecorrelation",
    "FourierImage",
    "ImageParam",
    "ModelSpaceImage",
    "PixelImage",
    "image_param",
    "straight_clamp",
]

Activation = Literal["sigmoid", "clamp", "none"]

COLOR_CORRELATION_SVD_SQRT = (
    (0.26, 0.09, 0.02),
    (0.27, 0.00, -0.05),
    (0.27, -0.09, 0.03),
)
"""lucid's `color_correlation_svd_sqrt`: the square root of ImageNet's RGB covariance."""
COLOR_MEAN = (0.48, 0.46, 0.41)
"""lucid's ImageNet mean colour, added back when no sigmoid recentres the image."""


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else size
    if not (isinstance(h, int) and isinstance(w, int) and h >= 1 and w >= 1):
        raise UserInputError(f"the image size must be positive whole numbers, got {size!r}.")
    return h, w


def _check_batch(batch: int) -> int:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise UserInputError(f"the batch must be at least 1 image, got {batch!r}.")
    return batch


def _check_init(init: Tensor, shape: tuple[int, int, int, int]) -> Tensor:
    x = init.detach().float()
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[1] != 3:
        raise UserInputError(
            f"the initial image must be (3, H, W) or (B, 3, H, W), got {tuple(init.shape)}."
        )
    if tuple(x.shape[-2:]) != shape[-2:]:
        raise UserInputError(
            f"the initial image is {x.shape[-1]}x{x.shape[-2]}, the parameterization "
            f"{shape[-1]}x{shape[-2]}."
        )
    if x.shape[0] not in (1, shape[0]):
        raise UserInputError(f"the initial images are {x.shape[0]}, the batch is {shape[0]}.")
    return x.expand(shape).clone()


class _StraightClamp(torch.autograd.Function):
    """Clamp to [lo, hi] forward; pass the gradient through unchanged backward, so that a
    value pushed out of range can come back (a plain clamp would give it no gradient)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, lo: float, hi: float) -> Tensor:
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return grad, None, None


def straight_clamp(x: Tensor, lo: float = 0.0, hi: float = 1.0) -> Tensor:
    """`x.clamp(lo, hi)` with a straight-through gradient."""
    out: Tensor = _StraightClamp.apply(x, lo, hi)
    return out


class ColorDecorrelation(nn.Module):
    """(B, 3, H, W) decorrelated colour → RGB: each pixel's colour times lucid's normalized
    colour matrix (its columns divided by the largest column norm). `inverse` undoes it."""

    matrix: Tensor

    def __init__(self) -> None:
        super().__init__()
        m = torch.tensor(COLOR_CORRELATION_SVD_SQRT, dtype=torch.float32)
        m = m / m.norm(dim=0).max()
        self.register_buffer("matrix", m, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("ij,bjhw->bihw", self.matrix.to(x), x)

    def inverse(self, rgb: Tensor) -> Tensor:
        return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(self.matrix.double()).to(rgb), rgb)


def _freqs(h: int, w: int) -> Tensor:
    """(h, w//2 + 1) spatial frequencies (cycles per pixel) of a real 2-D FFT."""
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


class FourierImage(nn.Module):
    """An image given by its real 2-D spectrum, each frequency f scaled by
    1 / max(f, 1/max(H, W))^decay_power (and the result by 1/4, lucid's constant), so that
    steps are spread evenly over frequencies. `forward()` returns the (B, 3, H, W) image in
    the unbounded space the colour map and activation then map to [0, 1]."""

    spectrum_scale: Tensor

    def __init__(
        self,
        size: int | tuple[int, int],
        *,
        batch: int = 1,
        sd: float = 0.01,
        decay_power: float = 1.0,
        init: Tensor | None = None,
    ) -> None:
        super().__init__()
        h, w = _size(size)
        b = _check_batch(batch)
        self.size = (h, w)
        self.decay_power = decay_power
        scale = 1.0 / _freqs(h, w).clamp(min=1.0 / max(h, w)) ** decay_power  # (h, w//2+1)
        self.register_buffer("spectrum_scale", scale, persistent=False)
        shape = (b, 3, h, w // 2 + 1, 2)
        if init is None:
            spectrum = torch.randn(shape) * sd
        else:
            spectrum = self.spectrum_of(_check_init(init, (b, 3, h, w)))
        self.spectrum = nn.Parameter(spectrum)

    def forward(self) -> Tensor:
        spec = torch.view_as_complex(self.spectrum) * self.spectrum_scale
        image: Tensor = torch.fft.irfft2(spec, s=self.size, norm="ortho")
        return image / 4.0

    def spectrum_of(self, image: Tensor) -> Tensor:
        """The parameters (B, 3, H, W//2+1, 2) whose `forward()` is `image` (B, 3, H, W)."""
        spec = torch.fft.rfft2(image.double() * 4.0, norm="ortho") / self.spectrum_scale.double()
        return torch.view_as_real(spec).float().contiguous()


class PixelImage(nn.Module):
    """One parameter per pixel and channel, (B, 3, H, W), initialized with N(0, sd²) noise
    or from an image (in the same unbounded space as `FourierImage`'s output)."""

    def __init__(
        self,
        size: int | tuple[int, int],
        *,
        batch: int = 1,
        sd: float = 0.01,
        init: Tensor | None = None,
    ) -> None:
        super().__init__()
        h, w = _size(size)
        b = _check_batch(batch)
        self.size = (h, w)
        start = torch.randn(b, 3, h, w) * sd if init is None else _check_init(init, (b, 3, h, w))
        self.pixels = nn.Parameter(start)

    def forward(self) -> Tensor:
        return self.pixels


def _logit(x: Tensor) -> Tensor:
    p = x.clamp(1e-4, 1 - 1e-4)
    return torch.log(p) - torch.log1p(-p)


class ImageParam(nn.Module):
    """The image to optimize: a raw parameterization (`PixelImage` or `FourierImage`), an
    optional colour decorrelation, and an activation into [0, 1]: "sigmoid" (lucid),
    "clamp" (a straight-through clamp) or "none" (unbounded; the caller keeps it in range)."""

    def __init__(
        self,
        raw: nn.Module,
        *,
        decorrelate: bool = True,
        activation: Activation = "sigmoid",
    ) -> None:
        super().__init__()
        if activation not in ("sigmoid", "clamp", "none"):
            raise UserInputError(f"activation must be sigmoid, clamp or none, not {activation!r}.")
        self.raw = raw
        self.color = ColorDecorrelation() if decorrelate else None
        self.activation = activation

    def forward(self) -> Tensor:
        x: Tensor = self.raw()
        if self.color is not None:
            x = self.color(x)
            if self.activation != "sigmoid":
                x = x + torch.tensor(COLOR_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        if self.activation == "sigmoid":
            return torch.sigmoid(x)
        if self.activation == "clamp":
            return straight_clamp(x, 0.0, 1.0)
        return x

    @staticmethod
    def raw_of(image: Tensor, *, decorrelate: bool, activation: Activation) -> Tensor:
        """The raw values (before colour and activation) that give `image` in [0, 1]."""
        x = image.detach().float()
        if x.dim() == 3:
            x = x[None]
        if activation == "sigmoid":
            x = _logit(x)
        elif decorrelate:
            x = x - torch.tensor(COLOR_MEAN).view(1, 3, 1, 1)
        if decorrelate:
            x = ColorDecorrelation().inverse(x)
        return x

    def extra_repr(self) -> str:
        return f"decorrelate={self.color is not None}, activation={self.activation!r}"


class ModelSpaceImage(nn.Module):
    """The model's normalized input as the parameter (B, 3, H, W), shown as pixels by the
    model's `Preprocess.denormalize` (unclamped: keep it in range with a callback). This is
    how CS231n's class visualization and Yosinski et al. optimize; their learning rates are in
    these units. Starts from N(0, sd²) in model space (or from an image in [0, 1])."""

    def __init__(
        self,
        preprocess: Preprocess,
        size: int | tuple[int, int],
        *,
        batch: int = 1,
        sd: float = 1.0,
        init: Tensor | None = None,
    ) -> None:
        super().__init__()
        h, w = _size(size)
        b = _check_batch(batch)
        self.preprocess = preprocess
        self.size = (h, w)
        if init is None:
            start = torch.randn(b, 3, h, w) * sd
        else:
            start = preprocess.normalize(_check_init(init, (b, 3, h, w)))
        self.values = nn.Parameter(start)

    def forward(self) -> Tensor:
        return self.preprocess.denormalize(self.values)

    def clamp_(self) -> None:
        """Keep the image in [0, 1] (in model space: between the images of 0 and 1)."""
        with torch.no_grad():
            lo = self.preprocess.normalize(torch.zeros(1, 3, 1, 1))
            hi = self.preprocess.normalize(torch.ones(1, 3, 1, 1))
            self.values.copy_(torch.maximum(torch.minimum(self.values, hi), lo))


def image_param(
    size: int | tuple[int, int],
    *,
    batch: int = 1,
    fft: bool = True,
    decorrelate: bool = True,
    activation: Activation = "sigmoid",
    sd: float = 0.01,
    init: Tensor | None = None,
) -> ImageParam:
    """lucid's image parameterization: Fourier (`fft=True`) or pixels, decorrelated colour,
    a sigmoid into [0, 1]; `init` (3, H, W) or (B, 3, H, W) in [0, 1] starts from an image
    instead of noise of standard deviation `sd`."""
    h, w = _size(size)
    raw_init = None
    if init is not None:
        raw_init = ImageParam.raw_of(init, decorrelate=decorrelate, activation=activation)
    make: Callable[..., nn.Module] = FourierImage if fft else PixelImage
    raw = make((h, w), batch=batch, sd=sd, init=raw_init)
    return ImageParam(raw, decorrelate=decorrelate, activation=activation)
