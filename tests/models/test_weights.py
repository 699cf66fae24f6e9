"""`convscope.models.weights`: safe state-dict files (never unpickling arbitrary objects)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from convscope.errors import WeightsUnavailableError
from convscope.models.weights import (
    is_safetensors_file,
    load_state_dict_file,
    load_state_dict_strict,
)

# Set by `_mark` if unpickling ever runs the payload of `Payload`.
CALLED: list[str] = []


def _mark() -> str:
    CALLED.append("unpickled")
    return "pwned"


class Payload:
    """An object whose unpickling would call `_mark`."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (_mark, ())


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    return {k: v.clone() for k, v in net.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _one_sentence(err: pytest.ExceptionInfo[WeightsUnavailableError]) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg.endswith(".")
    return msg


@pytest.mark.parametrize("name", ["w.safetensors", "w.bin"])
def test_safetensors_round_trip(tmp_path: Path, name: str) -> None:
    state = _state()
    path = tmp_path / name
    save_file(state, str(path))
    assert is_safetensors_file(path)  # by suffix, or sniffed from the header
    assert _same(load_state_dict_file(path), state)
    assert _same(load_state_dict_file(str(path)), state)


@pytest.mark.parametrize("name", ["w.pt", "w.pth", "w.safetensors.bak"])
def test_torch_file_round_trip(tmp_path: Path, name: str) -> None:
    state = _state()
    path = tmp_path / name
    torch.save(state, path)
    assert not is_safetensors_file(path)
    assert _same(load_state_dict_file(path), state)


def test_state_dict_wrapper_is_unwrapped(tmp_path: Path) -> None:
    state = _state()
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": state, "epoch": 3}, path)
    assert _same(load_state_dict_file(path), state)


def test_pickled_object_is_refused_without_running_it(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "extra": Payload()}, path)
    CALLED.clear()
    with pytest.raises(WeightsUnavailableError, match="weights_only") as err:
        load_state_dict_file(path)
    _one_sentence(err)
    assert CALLED == []


def test_whole_pickled_module_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "module.pt"
    torch.save(nn.Linear(2, 2), path)
    with pytest.raises(WeightsUnavailableError):
        load_state_dict_file(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="does not exist") as err:
        load_state_dict_file(tmp_path / "nope.pt")
    _one_sentence(err)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="not a file"):
        load_state_dict_file(tmp_path)


@pytest.mark.parametrize("name", ["junk.pt", "junk.safetensors", "junk"])
def test_garbage_bytes(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\x00\x01not a weights file at all" * 10)
    with pytest.raises(WeightsUnavailableError) as err:
        load_state_dict_file(path)
    _one_sentence(err)


def test_truncated_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "cut.safetensors"
    save_file(_state(), str(path))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(WeightsUnavailableError, match="safetensors"):
        load_state_dict_file(path)


def test_fake_safetensors_header_is_sniffed_but_refused(tmp_path: Path) -> None:
    header = json.dumps({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    path = tmp_path / "fake"
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\x00" * 4)  # too short
    assert is_safetensors_file(path)
    with pytest.raises(WeightsUnavailableError):
        load_state_dict_file(path)


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ([torch.zeros(1)], "holds a list"),
        ({}, "holds no tensors"),
        ({"w": torch.zeros(1), "step": 3}, "not a state dict of tensors"),
    ],
)
def test_not_a_state_dict(tmp_path: Path, obj: object, match: str) -> None:
    path = tmp_path / "x.pt"
    torch.save(obj, path)
    with pytest.raises(WeightsUnavailableError, match=match) as err:
        load_state_dict_file(path)
    _one_sentence(err)


def test_strict_load_explains_mismatches_in_one_sentence() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    good = _state()
    load_state_dict_strict(net, good, "test weights")
    assert _same({k: v for k, v in net.state_dict().items()}, good)

    missing = {k: v for k, v in good.items() if k != "0.bias"}
    with pytest.raises(WeightsUnavailableError, match="1 missing key") as err:
        load_state_dict_strict(net, missing, "test weights")
    assert "'0.bias'" in _one_sentence(err)

    extra = {**good, "head.weight": torch.zeros(1)}
    with pytest.raises(WeightsUnavailableError, match="unexpected key"):
        load_state_dict_strict(net, extra, "test weights")

    wrong = {**good, "0.weight": torch.zeros(4, 3, 5, 5)}
    with pytest.raises(WeightsUnavailableError, match="shape mismatch"):
        load_state_dict_strict(net, wrong, "test weights")
    # A failed load leaves the module as it was.
    assert _same({k: v for k, v in net.state_dict().items()}, good)
