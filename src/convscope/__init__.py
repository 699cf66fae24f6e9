"""convscope: see inside convolutional networks and make images with them."""

from convscope.errors import ConvscopeError, UnknownNameError, UserInputError
from convscope.models import ConvModel, Preprocess, load_model
from convscope.probe import LayerInfo, Probe, capture, layers

__version__ = "0.1.0"

__all__ = [
    "ConvModel",
    "ConvscopeError",
    "LayerInfo",
    "Preprocess",
    "Probe",
    "UnknownNameError",
    "UserInputError",
    "__version__",
    "capture",
    "layers",
    "load_model",
]
