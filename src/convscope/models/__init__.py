"""The model zoo: `load_model(name, weights=..., device=...) -> ConvModel`."""

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
