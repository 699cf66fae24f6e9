"""Device selection, and the reduced precision a device runs fast. There is no device global:
callers pass the device they want."""

from __future__ import annotations

import functools
import os

import torch

from convscope.errors import UserInputError

__all__ = ["DEVICES", "cpu_flags", "fast_dtype", "resolve_device"]

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


BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""x86 CPU flags of native bfloat16 arithmetic."""
_BELOW_BF16_ISAS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none to read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def fast_dtype(device: torch.device) -> torch.dtype | None:
    """The reduced precision that is actually faster than float32 on `device`, if any.

    On a CPU that is bfloat16 only where the hardware does it natively: oneDNN must support it
    and, where /proc/cpuinfo lists flags, the CPU must have AVX-512 BF16 or AMX (on other
    AVX-512 CPUs oneDNN emulates bfloat16, several times slower than float32), and
    `ONEDNN_MAX_CPU_ISA` must not cap oneDNN below them. On CUDA: bfloat16 where supported,
    else float16. Elsewhere: None."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type != "cpu":
        return None
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    flags = cpu_flags()
    if flags and ("avx2" in flags or "avx512f" in flags):  # x86: the flags decide
        native = native and any(f in flags for f in BF16_FLAGS)
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", ""))
    if cap.strip().upper() in _BELOW_BF16_ISAS:
        native = False
    return torch.bfloat16 if native else None
