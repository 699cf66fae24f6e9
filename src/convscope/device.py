"""Device selection. There is no device global: callers pass the device they want."""

from __future__ import annotations

import torch

from convscope.errors import UserInputError

__all__ = ["DEVICES", "resolve_device"]

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`auto` picks cuda, then mps, then cpu. An unavailable or unknown device raises."""
    if isinstance(device, torch.device):
        return device
    name = device.strip().lower()
    base = name.split(":", 1)[0]
    if base not in DEVICES:
        raise UserInputError(f"Unknown device {device!r}; choose one of {', '.join(DEVICES)}.")
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise UserInputError("device 'cuda' was asked for, but no CUDA GPU is available here.")
    if base == "mps" and not torch.backends.mps.is_available():
        raise UserInputError("device 'mps' was asked for, but Apple's MPS is not available here.")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise UserInputError(f"Invalid device {device!r}: {exc}.") from None
