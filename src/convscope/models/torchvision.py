"""torchvision's ImageNet architectures by name.

Weights: `"DEFAULT"` (or an enum name such as `"IMAGENET1K_V1"`) downloads through torchvision
when online; a file path loads a local state dict; `"random"` asks for random init. With no
weights, a checkpoint already in torch's hub cache is used, else a clear error names the options.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torchvision.models as tvm
from torch import nn

from convscope.errors import UserInputError, WeightsUnavailableError
from convscope.models.availability import torchvision_models
from convscope.models.base import ConvModel, Preprocess, WeightSource
from convscope.models.vgg import vgg_aliases
from convscope.models.weights import load_state_dict_file

__all__ = ["TORCHVISION_MODELS", "build_torchvision"]

TORCHVISION_MODELS: dict[str, str] = {name: arch for name, arch, _ in torchvision_models()}
"""Registry name → torchvision architecture."""

# A late conv layer per family, for Grad-CAM and demos.
_DEFAULT_LAYER = {
    "alexnet": "features.11",
    "vgg": "features",
    "resnet": "layer4",
    "resnext": "layer4",
    "wide_resnet": "layer4",
    "squeezenet": "features.12",
    "googlenet": "inception5b",
    "inception": "Mixed_7c",
    "mobilenet": "features",
    "mnasnet": "layers",
    "shufflenet": "conv5",
    "densenet": "features",
    "efficientnet": "features",
    "regnet": "trunk_output",
    "convnext": "features",
}


def _hub_checkpoint(weights: Any) -> Path:
    filename = os.path.basename(str(weights.url))
    return Path(torch.hub.get_dir()) / "checkpoints" / filename  # honours torch.hub.set_dir


def _preprocess(weights: Any) -> Preprocess:
    t = weights.transforms()
    interp = str(getattr(t, "interpolation", "bilinear")).rsplit(".", 1)[-1].lower()
    return Preprocess(
        resize=int(t.resize_size[0]),
        crop=int(t.crop_size[0]),
        interpolation="bicubic" if interp == "bicubic" else "bilinear",
        scale=1.0,
        mean=tuple(t.mean),  # type: ignore[arg-type]
        std=tuple(t.std),  # type: ignore[arg-type]
    )


def _aliases(arch: str, module: nn.Module) -> dict[str, str]:
    features = getattr(module, "features", None)
    if arch.startswith(("vgg", "alexnet")) and isinstance(features, nn.Sequential):
        if arch.startswith("vgg"):
            return vgg_aliases(features)
        convs = [i for i, m in enumerate(features) if isinstance(m, nn.Conv2d)]
        out = {}
        for k, i in enumerate(convs, start=1):
            out[f"conv{k}"] = f"features.{i}"
            out[f"relu{k}"] = f"features.{i + 1}"
        pools = [i for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]
        for k, i in zip((1, 2, 5), pools, strict=False):
            out[f"pool{k}"] = f"features.{i}"
        return out
    return {}


def _build_arch(arch: str) -> nn.Module:
    kwargs: dict[str, Any] = {}
    if arch in ("googlenet", "inception_v3"):
        kwargs = {"aux_logits": False, "init_weights": False}
    module: nn.Module = tvm.get_model(arch, weights=None, **kwargs)
    return module


def build_torchvision(name: str, weights: str | None) -> ConvModel:
    """Build torchvision architecture `name` (a registry name) with the given weights."""
    arch = TORCHVISION_MODELS[name]
    enum = tvm.get_model_weights(arch)
    default = enum.DEFAULT
    used = default
    if weights is None:
        if not _hub_checkpoint(default).is_file():
            raise WeightsUnavailableError(
                f"model {name!r} has no offline weights here; pass --weights DEFAULT to download "
                "them through torchvision (online), --weights FILE for a local state dict, "
                "or --weights random for random weights."
            )
        weights = "DEFAULT"
    if weights == "random":
        module = _build_arch(arch)
        source = WeightSource("random")
    elif weights == "DEFAULT" or weights in enum.__members__:
        used = default if weights == "DEFAULT" else enum[weights]
        try:
            module = tvm.get_model(arch, weights=used)
        except (OSError, RuntimeError) as exc:  # URLError is an OSError
            raise WeightsUnavailableError(
                f"could not download the {used} weights of {name!r} ({exc.__class__.__name__}); "
                "when offline, pass --weights FILE with a local state dict."
            ) from None
        source = WeightSource("url", used.url)
    else:
        path = Path(weights)
        if not path.exists() and not path.suffix:
            raise UserInputError(
                f"weights {weights!r} are neither a file nor one of DEFAULT, random, "
                + ", ".join(enum.__members__)
                + "."
            )
        state = load_state_dict_file(path)
        module = _build_arch(arch)
        own = module.state_dict()
        state = {k: v for k, v in state.items() if k in own or not k.startswith("aux")}
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0].rstrip(":.")
            raise WeightsUnavailableError(
                f"the weights in {path} do not fit {name!r} ({first})."
            ) from None
        source = WeightSource("file", str(path))
    family = next(f for f in sorted(_DEFAULT_LAYER, key=len, reverse=True) if arch.startswith(f))
    aliases = _aliases(arch, module)
    default_layer = _DEFAULT_LAYER[family]
    if arch.startswith("vgg"):
        default_layer = aliases[
            "relu5_" + str(max(int(k[6:]) for k in aliases if k.startswith("relu5_")))
        ]
    return ConvModel(
        name=name,
        module=module,
        preprocess=_preprocess(used),
        source=source,
        classes=tuple(used.meta["categories"]),
        aliases=aliases,
        default_layer=default_layer,
    )
