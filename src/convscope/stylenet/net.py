"""Johnson et al.'s feed-forward style network (2016), with Ulyanov et al.'s instance norm, and
Dumoulin et al.'s conditional instance norm (2017) for many styles in one network:

    net = TransformerNet()                              # one style, instance norm
    net = TransformerNet(norm="batch")                  # the lecture's comparison
    net = TransformerNet(norm="conditional", styles=4)  # four styles, blendable
    y = net(x, style=2)                                 # x, y: (B, 3, H, W) in [0, 1]
    y = net(x, style=[0.3, 0.7, 0, 0])                  # a blend, normalized to sum 1

The architecture: reflection padding everywhere; a 9×9 conv to 32 channels, two stride-2 3×3
convs to 64 and 128; five residual blocks of two 3×3 convs; two upsamplings by
nearest-neighbour ×2 then a 3×3 conv (no transposed convs, so no checkerboard artifacts), to
64 and 32 channels; a 9×9 conv to 3. Every conv but the last is followed by the norm and a
ReLU (the residual blocks' second conv by the norm alone).

- **Sizes.** Any input of at least 32 px a side: it is reflection-padded to a multiple of 4 (the
  two strides) and the output cropped back, so the output has the input's size. Under a trace
  (`torch.onnx.export`, see `convscope.stylenet.export`) the pad and crop follow the traced
  shape, so the exported graph holds at any size.
- **Range.** Images are in [0, 1]; the output is not clamped (training needs its gradient),
  so clamp it to show or save it (`stylize` does).
- **Conditional instance norm.** Each norm layer holds one scale γₛ and shift βₛ per style;
  a blend with weights wₛ uses Σ wₛγₛ and Σ wₛβₛ. Weights are non-negative and normalized to
  sum 1 (`perceptual.blend_weights`, as `convscope style --style-blend-weights`); all zeros
  is an error. A style index is the one-hot blend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convscope.errors import UserInputError, check_whole
from convscope.synthesize.perceptual import blend_weights

__all__ = [
    "MIN_SIDE",
    "NORMS",
    "ConditionalInstanceNorm",
    "Norm",
    "StyleChoice",
    "TransformerNet",
    "blend_grid",
    "style_weights",
]

NORMS: tuple[str, ...] = ("instance", "batch", "conditional")
Norm = Literal["instance", "batch", "conditional"]
MIN_SIDE = 32
"""The smallest input side, in pixels."""
StyleChoice = int | Sequence[float] | Tensor | None


class ConditionalInstanceNorm(nn.Module):
    """Instance norm with a scale and a shift per style (Dumoulin et al. 2017): for style
    weights w (B, N), summing to 1, y = (x − μ) / σ · (w γ) + (w β)."""

    def __init__(self, channels: int, styles: int, eps: float = 1e-5) -> None:
        super().__init__()
        if styles < 1:
            raise UserInputError(f"a conditional network needs at least 1 style, got {styles}.")
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(styles, channels))  # γ (N, C)
        self.shift = nn.Parameter(torch.zeros(styles, channels))  # β (N, C)

    @property
    def styles(self) -> int:
        return int(self.scale.shape[0])

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        normalized = F.instance_norm(x, eps=self.eps)  # (B, C, H, W)
        gamma = weights.to(x) @ self.scale  # (B, C)
        beta = weights.to(x) @ self.shift
        return normalized * gamma[:, :, None, None] + beta[:, :, None, None]


class _Norm(nn.Module):
    """One of the three norms behind one call, `(x, weights)`."""

    def __init__(self, kind: Norm, channels: int, styles: int) -> None:
        super().__init__()
        self.kind = kind
        self.norm: nn.Module
        if kind == "instance":
            self.norm = nn.InstanceNorm2d(channels, affine=True)
        elif kind == "batch":
            self.norm = nn.BatchNorm2d(channels)
        else:
            self.norm = ConditionalInstanceNorm(channels, styles)

    def forward(self, x: Tensor, weights: Tensor | None) -> Tensor:
        if self.kind == "conditional":
            assert weights is not None
            out: Tensor = self.norm(x, weights)
            return out
        out = self.norm(x)
        return out


class _Conv(nn.Module):
    """Reflection padding, then a conv (after a nearest-neighbour ×2 upsampling if asked)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, up: bool = False):
        super().__init__()
        self.up = up
        self.pad = nn.ReflectionPad2d(kernel // 2)
        self.conv = nn.Conv2d(cin, cout, kernel, stride)

    def forward(self, x: Tensor) -> Tensor:
        if self.up and not _exporting():
            return upsample_conv(x, self.conv.weight, self.conv.bias)
        if self.up:  # the straightforward path, which ONNX holds at any size
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        out: Tensor = self.conv(self.pad(x))
        return out


def upsample_conv(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """A nearest-neighbour ×2 upsampling, a reflection pad of 1 and a 3×3 conv, computed on
    the small image: (B, C, H, W) → (B, O, 2H, 2W), 2.25× fewer multiply-adds and no
    upsampled copy. Each output pixel (2i + a, 2j + b) sees only two rows and two columns
    of the small image, so the conv is four 2×2 convs, one per phase (a, b), with the 3×3
    kernel's taps summed where they fall on the same small pixel (phase 0: k₀ on i − 1 and
    k₁ + k₂ on i; phase 1: k₀ + k₁ on i and k₂ on i + 1), on the small image padded by
    replication (the reflection of the upsampled image's first row is the small image's
    first row again). Equal to the straightforward path up to float rounding (tested)."""
    b, _, h, w = x.shape
    o = weight.shape[0]
    xp = F.pad(x, (1, 1, 1, 1), mode="replicate")  # (B, C, H + 2, W + 2)
    rows = [
        torch.stack([weight[:, :, 0], weight[:, :, 1] + weight[:, :, 2]], dim=2),
        torch.stack([weight[:, :, 0] + weight[:, :, 1], weight[:, :, 2]], dim=2),
    ]  # per row phase: (O, C, 2, 3)
    phases = []
    for a in (0, 1):
        r = rows[a]
        cols = [
            torch.stack([r[..., 0], r[..., 1] + r[..., 2]], dim=3),
            torch.stack([r[..., 0] + r[..., 1], r[..., 2]], dim=3),
        ]  # per column phase: (O, C, 2, 2)
        for c in (0, 1):
            phases.append(F.conv2d(xp[:, :, a : a + h + 1, c : c + w + 1], cols[c], bias))
    y = torch.stack(phases, dim=2)  # (B, O, 4, H, W): phases (0,0), (0,1), (1,0), (1,1)
    y = y.reshape(b, o, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)  # (B, O, H, 2, W, 2)
    return y.reshape(b, o, 2 * h, 2 * w)


class _ConvNormReLU(nn.Module):
    def __init__(
        self, cin: int, cout: int, kernel: int, norm: Norm, styles: int, *, stride: int = 1,
        up: bool = False, relu: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        self.conv = _Conv(cin, cout, kernel, stride, up)
        self.norm = _Norm(norm, cout, styles)
        self.relu = relu

    def forward(self, x: Tensor, weights: Tensor | None) -> Tensor:
        y = self.norm(self.conv(x), weights)
        return F.relu(y) if self.relu else y


class _Residual(nn.Module):
    def __init__(self, channels: int, norm: Norm, styles: int) -> None:
        super().__init__()
        self.first = _ConvNormReLU(channels, channels, 3, norm, styles)
        self.second = _ConvNormReLU(channels, channels, 3, norm, styles, relu=False)

    def forward(self, x: Tensor, weights: Tensor | None) -> Tensor:
        y: Tensor = self.second(self.first(x, weights), weights)
        return x + y


def style_weights(style: StyleChoice, styles: int, batch: int) -> Tensor:
    """(batch, styles) blend weights from a style index, a weight per style (normalized to
    sum 1) or a (batch, styles) tensor of weights (each row normalized); None is the first
    style (of one)."""
    if style is None:
        if styles != 1:
            raise UserInputError(
                f"this network holds {styles} styles; choose one (an index from 0 to "
                f"{styles - 1}) or give blend weights."
            )
        return torch.ones(batch, 1)
    if isinstance(style, bool):
        raise UserInputError(f"a style is an index or blend weights, not {style!r}.")
    if isinstance(style, int):
        if not 0 <= style < styles:
            raise UserInputError(
                f"style {style} is out of range: this network holds styles 0 to {styles - 1}."
            )
        return F.one_hot(torch.full((batch,), style), styles).float()
    if isinstance(style, Tensor) and style.dim() == 2:
        if tuple(style.shape) != (batch, styles):
            raise UserInputError(
                f"blend weights for a batch must be ({batch}, {styles}), got {tuple(style.shape)}."
            )
        rows = [blend_weights(row.tolist(), styles) for row in style.detach().float().cpu()]
        return torch.tensor(rows, dtype=torch.float32)
    values = style.tolist() if isinstance(style, Tensor) else list(style)
    return torch.tensor([blend_weights(values, styles)] * batch, dtype=torch.float32)


def blend_grid(corners: Sequence[int], styles: int, steps: int = 5) -> Tensor:
    """Blend weights for a grid between styles: two corner styles give a row of `steps`
    blends from the first to the second; four give a `steps`×`steps` square (row by row),
    the first two at the top corners and the last two at the bottom, bilinear in between.
    (n, styles), each row summing to 1."""
    if len(corners) not in (2, 4):
        raise UserInputError(f"a blend grid has two or four corner styles, not {len(corners)}.")
    one_hot = torch.eye(styles)[list(corners)]  # (2 or 4, styles)
    t = torch.linspace(0, 1, check_whole(steps, "steps", 2))
    if len(corners) == 2:
        rows = [(1 - a) * one_hot[0] + a * one_hot[1] for a in t]
    else:
        rows = [
            (1 - b) * ((1 - a) * one_hot[0] + a * one_hot[1])
            + b * ((1 - a) * one_hot[2] + a * one_hot[3])
            for b in t
            for a in t
        ]
    return torch.stack(rows)


class TransformerNet(nn.Module):
    """The feed-forward style network (see the module docstring)."""

    def __init__(self, norm: Norm = "instance", styles: int = 1) -> None:
        super().__init__()
        if norm not in NORMS:
            raise UserInputError(f"--norm must be instance, batch or conditional, got {norm!r}.")
        if isinstance(styles, bool) or not isinstance(styles, int) or styles < 1:
            raise UserInputError(f"a network holds at least 1 style, got {styles!r}.")
        if norm != "conditional" and styles != 1:
            raise UserInputError(
                f"{styles} styles in one network need norm='conditional', not {norm!r}."
            )
        self.norm_kind: Norm = norm
        self.styles = styles
        self.down = nn.ModuleList(
            [
                _ConvNormReLU(3, 32, 9, norm, styles),
                _ConvNormReLU(32, 64, 3, norm, styles, stride=2),
                _ConvNormReLU(64, 128, 3, norm, styles, stride=2),
            ]
        )
        self.residuals = nn.ModuleList([_Residual(128, norm, styles) for _ in range(5)])
        self.up = nn.ModuleList(
            [
                _ConvNormReLU(128, 64, 3, norm, styles, up=True),
                _ConvNormReLU(64, 32, 3, norm, styles, up=True),
            ]
        )
        self.out = _Conv(32, 3, 9)

    def forward(self, x: Tensor, style: StyleChoice = None) -> Tensor:
        """(B, 3, H, W) in [0, 1] → the stylized (B, 3, H, W), unclamped."""
        if _exporting():
            return self._traceable(x, style)
        if x.dim() != 4 or x.shape[1] != 3:
            raise UserInputError(f"the network takes (B, 3, H, W) images, got {tuple(x.shape)}.")
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if min(h, w) < MIN_SIDE:
            raise UserInputError(
                f"the input is {w}x{h}; the style network needs at least {MIN_SIDE} px a side."
            )
        weights = self._weights(style, int(x.shape[0]), x.device)
        ph, pw = -h % 4, -w % 4  # to a multiple of the two strides
        y = F.pad(x, (0, pw, 0, ph), mode="reflect") if ph or pw else x
        return self._layers(y, weights)[..., :h, :w]

    def _weights(self, style: StyleChoice, batch: int, device: torch.device) -> Tensor | None:
        """The (batch, styles) blend weights of a conditional network, else None."""
        if self.norm_kind == "conditional":
            return style_weights(style, self.styles, batch).to(device)
        if style is not None and not (type(style) is int and style == 0):
            raise UserInputError("this network holds one style; give no style or style 0.")
        return None

    def _layers(self, y: Tensor, weights: Tensor | None) -> Tensor:
        for layer in self.down:
            y = layer(y, weights)
        for block in self.residuals:
            y = block(y, weights)
        for layer in self.up:
            y = layer(y, weights)
        out: Tensor = self.out(y)
        return out

    def _traceable(self, x: Tensor, style: StyleChoice) -> Tensor:
        """`forward` as a trace (ONNX export) records it for any input size and batch.

        The sizes stay traced values, never Python ints: the input is reflection-padded by 3
        on the bottom and right, then cropped to the next multiple of 4, which is the eager
        padding by `-h % 4` (the first rows and columns of a reflection are the same whatever
        its width). The style weights are one row, broadcast over the batch, and the shape
        checks are left to the exporter (they would be recorded for the traced size only).
        """
        weights = self._weights(style, 1, x.device)
        h, w = x.shape[-2], x.shape[-1]  # traced sizes (0-dim tensors) under a trace
        y = F.pad(x, (0, 3, 0, 3), mode="reflect")[..., : (h + 3) // 4 * 4, : (w + 3) // 4 * 4]
        return self._layers(y, weights)[..., :h, :w]


def _exporting() -> bool:
    """Whether a forward is being traced (`torch.jit.trace`, `torch.onnx.export`)."""
    tracing = torch.jit.is_tracing()  # type: ignore[attr-defined, no-untyped-call]
    return bool(tracing) or torch.onnx.is_in_onnx_export()
