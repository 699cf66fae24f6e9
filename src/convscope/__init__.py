"""convscope: see inside convolutional networks and make images with them.

The names below are imported on first use, so `import convscope` (and the command line's
start-up) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from convscope._lazy import lazy_exports

if TYPE_CHECKING:
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

__getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {
        "ConvModel": "convscope.models",
        "ConvscopeError": "convscope.errors",
        "LayerInfo": "convscope.probe",
        "Preprocess": "convscope.models",
        "Probe": "convscope.probe",
        "UnknownNameError": "convscope.errors",
        "UserInputError": "convscope.errors",
        "capture": "convscope.probe",
        "layers": "convscope.probe",
        "load_model": "convscope.models",
    },
)
