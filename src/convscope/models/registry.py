"""The model registry: a name → a builder that returns a `ConvModel`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from convscope.device import resolve_device
from convscope.errors import UnknownNameError
from convscope.models.base import ConvModel

__all__ = ["ModelEntry", "load_model", "model_entries", "register"]

# weights: None = the model's default (offline where it has offline weights), "random" = random
# init (only when asked for), "DEFAULT" or a torchvision enum name = download, else a local file.
Builder = Callable[[str | None], ConvModel]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    builder: Builder
    # None when the default weights are available offline; otherwise how to get them.
    availability: Callable[[], str | None]
    source: str  # where default weights come from, for `convscope models`


_REGISTRY: dict[str, ModelEntry] = {}


def register(
    name: str,
    *,
    description: str,
    availability: Callable[[], str | None],
    source: str,
) -> Callable[[Builder], Builder]:
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
    # Importing the built-in modules registers them.
    from convscope import testing  # noqa: F401
    from convscope.models import efficientnet_lite, smallnet, torchvision, vgg  # noqa: F401
