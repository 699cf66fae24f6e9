"""Random, differentiable image transforms applied before the model at every step, so that the
optimized image must work under small shifts, scalings and rotations (transformation
robustness, Olah et al. 2017). Each is an `nn.Module` on (B, 3, H, W) images in [0, 1];
chain them with `nn.Sequential` (or `chain`). Randomness comes from torch's global generator,
which the loop seeds, so a seed gives the same run.

`standard()` is lucid's default chain. The periodic blur and clipping of Yosinski et al. 2015
change the image itself between steps, so they are loop callbacks (`convscope.synthesize.
callbacks`), not transforms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convscope.errors import UserInputError

__all__ = [
    "GaussianBlur",
    "Jitter",
    "Pad",
    "RandomRotate",
    "RandomScale",
    "Roll",
    "chain",
    "gaussian_blur",
    "rotate",
    "standard",
]


def _check_images(x: Tensor) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise UserInputError(f"transforms take (B, 3, H, W) images, got {tuple(x.shape)}.")


def _choice(options: Sequence[float]) -> float:
    return float(options[int(torch.randint(len(options), ()))])


def gaussian_kernel(sigma: float, radius: int | None = None) -> Tensor:
    """A normalized 1-D Gaussian (2·radius + 1 taps; radius 3σ by default)."""
    r = max(1, math.ceil(3 * sigma)) if radius is None else radius
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """A separable Gaussian blur of (B, C, H, W) with σ in pixels (reflect padding; σ ≤ 0 is
    the identity). Differentiable."""
    if sigma <= 0:
        return x
    h, w = int(x.shape[-2]), int(x.shape[-1])
    radius = min(max(1, math.ceil(3 * sigma)), h - 1, w - 1)
    if radius < 1:
        return x
    k = gaussian_kernel(sigma, radius).to(x)
    c = int(x.shape[1])
    y = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


class Pad(nn.Module):
    """Pad every side by `pad` pixels: with a constant (mid-gray by default) or by
    reflection."""

    def __init__(self, pad: int, *, mode: str = "constant", value: float = 0.5) -> None:
        super().__init__()
        if pad < 0:
            raise UserInputError(f"pad must be 0 or more pixels, got {pad}.")
        if mode not in ("constant", "reflect", "replicate"):
            raise UserInputError(f"pad mode must be constant, reflect or replicate, not {mode!r}.")
        self.pad, self.mode, self.value = pad, mode, value

    def forward(self, x: Tensor) -> Tensor:
        _check_images(x)
        p = [self.pad] * 4
        if self.mode == "constant":
            return F.pad(x, p, mode="constant", value=self.value)
        return F.pad(x, p, mode=self.mode)

    def extra_repr(self) -> str:
        return f"{self.pad}, mode={self.mode!r}"


class Jitter(nn.Module):
    """A random crop `d` pixels smaller in each dimension (lucid's jitter): the image moves by
    up to `d` pixels and loses its border."""

    def __init__(self, d: int) -> None:
        super().__init__()
        if d < 0:
            raise UserInputError(f"jitter must be 0 or more pixels, got {d}.")
        self.d = d

    def forward(self, x: Tensor) -> Tensor:
        _check_images(x)
        if self.d == 0:
            return x
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if self.d >= min(h, w):
            raise UserInputError(f"jitter {self.d} is too large for a {h}x{w} image.")
        dy, dx = (int(v) for v in torch.randint(self.d + 1, (2,)))
        return x[..., dy : dy + h - self.d, dx : dx + w - self.d]

    def extra_repr(self) -> str:
        return str(self.d)


class Roll(nn.Module):
    """A random circular shift by up to `shift` pixels in each direction (DeepDream's and
    CS231n's jitter): the size is kept and the gradient comes back unshifted."""

    def __init__(self, shift: int) -> None:
        super().__init__()
        if shift < 0:
            raise UserInputError(f"the shift must be 0 or more pixels, got {shift}.")
        self.shift = shift

    def forward(self, x: Tensor) -> Tensor:
        _check_images(x)
        if self.shift == 0:
            return x
        dy, dx = (int(v) - self.shift for v in torch.randint(2 * self.shift + 1, (2,)))
        return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))

    def extra_repr(self) -> str:
        return str(self.shift)


class RandomScale(nn.Module):
    """Resize by a factor drawn from `scales` (bilinear)."""

    def __init__(self, scales: Sequence[float]) -> None:
        super().__init__()
        if not scales or any(not (math.isfinite(s) and s > 0) for s in scales):
            raise UserInputError(f"scales must be positive numbers, got {list(scales)}.")
        self.scales = [float(s) for s in scales]

    def forward(self, x: Tensor) -> Tensor:
        _check_images(x)
        s = _choice(self.scales)
        if s == 1.0:
            return x
        h, w = int(x.shape[-2]), int(x.shape[-1])
        size = (max(1, round(h * s)), max(1, round(w * s)))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"{min(self.scales)}..{max(self.scales)}"


def rotate(x: Tensor, degrees: float, *, fill: float = 0.5) -> Tensor:
    """Rotate (B, C, H, W) by `degrees` counter-clockwise as displayed (as torchvision's rotate)
    about the centre (bilinear); what
    comes from outside the image takes `fill`. Differentiable (torchvision's rotate with a fill
    works in place and is not)."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    a = math.radians(degrees)
    cos, sin = math.cos(a), math.sin(a)
    # Output → input sampling positions in normalized coordinates, corrected for the aspect.
    theta = torch.tensor(
        [[cos, -sin * h / w, 0.0], [sin * w / h, cos, 0.0]], dtype=x.dtype, device=x.device
    )
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    inside = F.grid_sample(
        torch.ones_like(x[:, :1]), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return out + (1.0 - inside) * fill


class RandomRotate(nn.Module):
    """Rotate by an angle in degrees drawn from `angles` (bilinear; the corners take the
    fill, mid-gray by default)."""

    def __init__(self, angles: Sequence[float], *, fill: float = 0.5) -> None:
        super().__init__()
        if not angles or any(not math.isfinite(a) for a in angles):
            raise UserInputError(f"angles must be finite numbers, got {list(angles)}.")
        self.angles = [float(a) for a in angles]
        self.fill = fill

    def forward(self, x: Tensor) -> Tensor:
        _check_images(x)
        a = _choice(self.angles)
        if a == 0.0:
            return x
        return rotate(x, a, fill=self.fill)

    def extra_repr(self) -> str:
        return f"{min(self.angles)}..{max(self.angles)} degrees"


class GaussianBlur(nn.Module):
    """A Gaussian blur of σ pixels (`gaussian_blur`)."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        if not (math.isfinite(sigma) and sigma >= 0):
            raise UserInputError(f"sigma must be 0 or more, got {sigma}.")
        self.sigma = float(sigma)

    def forward(self, x: Tensor) -> Tensor:
        _check_images(x)
        return gaussian_blur(x, self.sigma)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


def chain(*transforms: nn.Module) -> nn.Sequential:
    """Transforms applied in order."""
    return nn.Sequential(*transforms)


def standard() -> nn.Sequential:
    """lucid's standard transforms: pad 12 (gray), jitter 8, scale 0.9–1.1, rotate ±10°
    (0° five times more often), jitter 4."""
    return chain(
        Pad(12),
        Jitter(8),
        RandomScale([1 + (i - 5) / 50 for i in range(11)]),
        RandomRotate([*range(-10, 11), *([0] * 5)]),
        Jitter(4),
    )
