"""The model zoo: `load_model(name, weights=..., device=...) -> ConvModel`.

Names are imported on first use (listing the models imports no torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from convscope._lazy import lazy_exports

if TYPE_CHECKING:
    from convscope.models.base import ConvModel, Prediction, Preprocess, WeightSource
    from convscope.models.registry import ModelEntry, load_model, model_entries, register

__all__ = [
    "ConvModel",
    "ModelEntry",
    "Prediction",
    "Preprocess",
    "WeightSource",
    "load_model",
    "model_entries",
    "register",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {
        "ConvModel": "convscope.models.base",
        "ModelEntry": "convscope.models.registry",
        "Prediction": "convscope.models.base",
        "Preprocess": "convscope.models.base",
        "WeightSource": "convscope.models.base",
        "load_model": "convscope.models.registry",
        "model_entries": "convscope.models.registry",
        "register": "convscope.models.registry",
    },
)
