"""Device selection and the reduced precision a device runs fast (mocked hardware)."""

from __future__ import annotations

import pytest
import torch

import convscope.device as dev
from convscope.errors import UserInputError

CPU = torch.device("cpu")


def _hardware(
    monkeypatch: pytest.MonkeyPatch, *, onednn: bool, flags: set[str], cap: str | None = None
) -> None:
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn)
    monkeypatch.setattr(dev, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if cap is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)


@pytest.mark.parametrize(
    ("onednn", "flags", "cap", "want"),
    [
        (True, {"avx2", "avx512f", "avx512_bf16"}, None, torch.bfloat16),
        (True, {"avx2", "avx512f", "amx_bf16"}, None, torch.bfloat16),
        # AVX-512 without BF16: oneDNN says yes but emulates it, slower than float32.
        (True, {"avx2", "avx512f"}, None, None),
        (True, {"avx2"}, None, None),
        (False, {"avx2", "avx512f", "avx512_bf16"}, None, None),
        # oneDNN capped below its bf16 kernels (how a CPU without them is simulated).
        (True, {"avx2", "avx512f", "avx512_bf16"}, "AVX2", None),
        (True, {"avx2", "avx512f", "avx512_bf16"}, "avx512_core", None),
        (True, {"avx2", "avx512f", "avx512_bf16"}, "AVX512_CORE_AMX", torch.bfloat16),
        # No x86 flags to read (another architecture, or no /proc): oneDNN decides.
        (True, set(), None, torch.bfloat16),
        (False, set(), None, None),
    ],
)
def test_fast_dtype_on_a_cpu(
    monkeypatch: pytest.MonkeyPatch,
    onednn: bool,
    flags: set[str],
    cap: str | None,
    want: torch.dtype | None,
) -> None:
    _hardware(monkeypatch, onednn=onednn, flags=flags, cap=cap)
    assert dev.fast_dtype(CPU) is want


def test_fast_dtype_when_the_onednn_check_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> bool:
        raise RuntimeError("no oneDNN")

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", broken)
    assert dev.fast_dtype(CPU) is None


def test_fast_dtype_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    assert dev.fast_dtype(torch.device("meta")) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert dev.fast_dtype(torch.device("cuda")) is torch.float16


def test_cpu_flags_is_a_set_of_words() -> None:
    flags = dev.cpu_flags()
    assert isinstance(flags, frozenset)
    assert all(isinstance(f, str) and f and " " not in f for f in flags)


def test_resolve_device() -> None:
    assert dev.resolve_device("cpu") == CPU
    assert dev.resolve_device(CPU) is CPU
    with pytest.raises(UserInputError, match="Unknown device"):
        dev.resolve_device("tpu")
