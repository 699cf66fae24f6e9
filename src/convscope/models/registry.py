"""The model registry: a name → a builder that returns a `ConvModel`."""

from __future__ import annotations

from collections.abc import Callable

import torch

from convscope.device import resolve_device
from convscope.errors import UnknownNameError
from convscope.models.base import Builder, ConvModel, ModelEntry

__all__ = ["ModelEntry", "load_model", "model_entries", "register"]

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
    """Register the built-in models (each builder module lists its own `ENTRIES`), first in
    the registry's order, before any the user registered."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    from convscope.models import efficientnet_lite, smallnet, tiny, torchvision, vgg

    users = dict(_REGISTRY)
    _REGISTRY.clear()
    for module in (efficientnet_lite, vgg, smallnet, tiny, torchvision):
        for entry in module.ENTRIES:
            _REGISTRY[entry.name] = entry
    _REGISTRY.update(users)
    _BUILTINS_LOADED = True
