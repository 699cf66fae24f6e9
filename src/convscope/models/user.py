"""The user's own models: `path/to/file.py:factory`, `package.module:attr`, or TorchScript.

The attribute may be a `ConvModel`, an `nn.Module`, or a callable (a class or a factory
function) returning either; it is called with no arguments. A bare `nn.Module` gets ImageNet
preprocessing and no class names.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convscope.errors import UserInputError, WeightsUnavailableError
from convscope.models.base import ConvModel, Preprocess, WeightSource
from convscope.models.weights import load_state_dict_file

__all__ = ["load_user_model", "looks_like_user_model"]

_TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript", ".jit")


def looks_like_user_model(spec: str) -> bool:
    if ":" in spec and not spec.startswith(("http:", "https:")):
        left = spec.rsplit(":", 1)[0]
        return left.endswith(".py") or all(p.isidentifier() for p in left.split("."))
    return spec.lower().endswith(_TORCHSCRIPT_SUFFIXES) or Path(spec).is_file()


def _import_attr(spec: str) -> Any:
    left, attr = spec.rsplit(":", 1)
    if left.endswith(".py"):
        path = Path(left)
        if not path.is_file():
            raise UserInputError(f"model file {left} does not exist.")
        mod_name = f"convscope_user_{abs(hash(path.resolve()))}"
        loader_spec = importlib.util.spec_from_file_location(mod_name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise UserInputError(f"{left} cannot be imported as a Python module.")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[mod_name] = module
        try:
            loader_spec.loader.exec_module(module)
        except SyntaxError as exc:
            raise UserInputError(f"{left} has a syntax error on line {exc.lineno}.") from None
        except ImportError as exc:
            raise UserInputError(f"{left} failed to import: {exc}.") from None
    else:
        try:
            module = importlib.import_module(left)
        except ImportError as exc:
            raise UserInputError(f"cannot import module {left!r}: {exc}.") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserInputError(f"{left} has no attribute {attr!r}.")
        obj = getattr(obj, part)
    return obj


def load_user_model(spec: str, weights: str | None = None) -> ConvModel:
    path = Path(spec)
    if ":" not in spec or (path.is_file() and path.suffix.lower() in _TORCHSCRIPT_SUFFIXES):
        if not path.is_file():
            raise UserInputError(f"model file {spec} does not exist.")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation note
                module: nn.Module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
        except (RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
            raise UserInputError(f"{spec} is not a TorchScript file ({first}).") from None
        source = WeightSource("torchscript", str(path))
        model = ConvModel(name=path.stem, module=module, preprocess=Preprocess(), source=source)
    else:
        obj = _import_attr(spec)
        if callable(obj) and not isinstance(obj, (nn.Module, ConvModel)):
            obj = obj()
        if isinstance(obj, ConvModel):
            model = obj
        elif isinstance(obj, nn.Module):
            model = ConvModel(
                name=spec.rsplit(":", 1)[1],
                module=obj,
                preprocess=Preprocess(),
                source=WeightSource("user", spec),
            )
        else:
            raise UserInputError(
                f"{spec} gave a {type(obj).__name__}, not an nn.Module or ConvModel."
            )
    if weights is not None and weights != "random":
        state = load_state_dict_file(Path(weights))
        try:
            model.module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0].rstrip(":.")
            raise WeightsUnavailableError(
                f"the weights in {weights} do not fit {spec} ({first})."
            ) from None
        from dataclasses import replace

        model = replace(model, source=WeightSource("file", str(weights)))
    return model
