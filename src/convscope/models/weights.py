"""Reading and writing state-dict files safely.

Nothing here ever unpickles arbitrary objects: torch files are read with `weights_only=True`, and
safetensors files cannot hold code at all. Every failure is a `WeightsUnavailableError` with one
sentence, so the CLI can print it as is.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from convscope.errors import WeightsUnavailableError
from convscope.models.base import WeightSource

__all__ = [
    "ChosenWeights",
    "choose_weights",
    "is_safetensors_file",
    "load_state_dict_file",
    "load_state_dict_strict",
]

# Wrappers that training scripts commonly put around a state dict.
_WRAPPER_KEYS = ("state_dict", "model_state_dict")


def is_safetensors_file(path: str | os.PathLike[str]) -> bool:
    """True when `path` ends in `.safetensors` or starts like a safetensors file (an 8-byte
    little-endian header length, then a JSON object)."""
    p = Path(path)
    if p.suffix.lower() == ".safetensors":
        return True
    try:
        with p.open("rb") as f:
            head = f.read(9)
        size = p.stat().st_size
    except OSError:
        return False
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < n <= size - 8


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """A state dict from a local file: safetensors, or a torch file read with
    `weights_only=True` (a file that needs unpickling of anything else is refused).

    A `{"state_dict": {...}}` wrapper is unwrapped. Missing, unreadable or corrupt files, and
    files that do not hold a mapping of names to tensors, raise `WeightsUnavailableError`.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise WeightsUnavailableError(f"Weights file {str(p)!r} does not exist.")
    if not p.is_file():
        raise WeightsUnavailableError(f"Weights path {str(p)!r} is not a file.")
    obj: object
    if is_safetensors_file(p):
        from safetensors.torch import load_file

        try:
            obj = load_file(str(p), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise WeightsUnavailableError(
                f"Weights file {str(p)!r} is not a readable safetensors file ({_why(exc)})."
            ) from exc
    else:
        try:
            with warnings.catch_warnings():
                # torch warns about the pickle protocol of old files; weights_only=True already
                # refuses anything but tensors, so the warning only adds noise to stderr.
                warnings.simplefilter("ignore", UserWarning)
                obj = torch.load(p, weights_only=True, map_location="cpu")
        except pickle.UnpicklingError as exc:  # torch's safe unpickler refused something
            raise WeightsUnavailableError(
                f"Weights file {str(p)!r} holds more than tensors, or a pickle feature that "
                "torch's safe loader (weights_only=True) refuses; convscope never unpickles "
                "anything else, so save the state dict with safetensors or plain torch.save."
            ) from exc
        except Exception as exc:  # RuntimeError, EOFError, ...
            raise WeightsUnavailableError(
                f"Weights file {str(p)!r} could not be read as a state dict with "
                f"weights_only=True (a safetensors or torch.save file of tensors is needed; "
                f"{_why(exc)})."
            ) from exc
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping):
        raise WeightsUnavailableError(
            f"Weights file {str(p)!r} holds a {type(obj).__name__}, not a state dict."
        )
    state: dict[str, Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise WeightsUnavailableError(
                f"Weights file {str(p)!r} is not a state dict of tensors "
                f"(entry {key!r} is a {type(value).__name__})."
            )
        state[key] = value
    if not state:
        raise WeightsUnavailableError(f"Weights file {str(p)!r} holds no tensors.")
    return state


def load_state_dict_strict(module: nn.Module, state: Mapping[str, Tensor], what: str) -> None:
    """`module.load_state_dict(state, strict=True)`, with a one-sentence
    `WeightsUnavailableError` naming the first mismatches when the keys or shapes differ.
    `what` describes the weights, e.g. "weights file 'x.pt'"."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s) such as {_few(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) such as {_few(unexpected)}")
    if wrong:
        problems.append(f"{len(wrong)} shape mismatch(es) such as {_few(wrong)}")
    if problems:
        raise WeightsUnavailableError(
            f"The {what} does not fit this model: " + "; ".join(problems) + "."
        )
    try:
        module.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:
        raise WeightsUnavailableError(f"The {what} does not fit this model ({_why(exc)}).") from exc


@dataclass(frozen=True)
class ChosenWeights:
    """What a model builder loads: a state dict (None = keep the module's own initialization)
    and where it came from. `what` names the weights in error messages."""

    state: Mapping[str, Tensor] | None
    source: WeightSource
    what: str
    path: Path | None = None

    @property
    def random(self) -> bool:
        return self.source.kind == "random"

    def load_into(self, module: nn.Module) -> None:
        """Load `state` into `module` strictly (nothing happens for random weights)."""
        if self.state is not None:
            load_state_dict_strict(module, self.state, self.what)


def choose_weights(
    weights: str | None,
    *,
    default: Callable[[], ChosenWeights],
    no_download: str,
) -> ChosenWeights:
    """The one branching of every built-in model's `weights` argument:

    - None: the model's own default weights (`default()`, e.g. a packaged file);
    - "random": keep the module's initialization (only when asked for);
    - "DEFAULT": refused with `no_download` (these models have nothing to download);
    - anything else: a local state-dict file (safetensors, or torch with `weights_only`).
    """
    if weights is None:
        return default()
    if weights == "random":
        return ChosenWeights(None, WeightSource("random", "random init"), "random init")
    if weights == "DEFAULT":
        raise WeightsUnavailableError(no_download)
    path = Path(weights).expanduser()
    state = load_state_dict_file(path)
    return ChosenWeights(state, WeightSource("file", str(path)), f"weights file {weights!r}", path)


def _few(items: list[str], n: int = 3) -> str:
    shown = ", ".join(repr(s) for s in items[:n])
    return shown + (", ..." if len(items) > n else "")


def _why(exc: BaseException) -> str:
    """The first line of an exception's message, shortened, without a trailing period."""
    lines = str(exc).strip().splitlines()
    text = lines[0].strip() if lines else type(exc).__name__
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(exc).__name__}: {text.rstrip('.')}"
