from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from convscope.errors import UserInputError, WeightsUnavailableError
from convscope.models import ConvModel, load_model
from convscope.testing import TinyNet


def test_file_factory(tmp_path: Path) -> None:
    f = tmp_path / "mynet.py"
    f.write_text(
        "import torch.nn as nn\n"
        "def make():\n"
        "    return nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU())\n"
    )
    cm = load_model(f"{f}:make")
    assert cm.source.kind == "user"
    assert cm.layer_names() == ["0", "1"]
    assert cm(torch.rand(1, 3, 8, 8)).shape == (1, 2, 6, 6)


def test_package_attr_and_weights(tmp_path: Path) -> None:
    net = TinyNet()
    with torch.no_grad():
        net.fc.bias.fill_(3.0)
    path = tmp_path / "w.safetensors"
    save_file(net.state_dict(), str(path))
    cm = load_model("convscope.testing:TinyNet", weights=str(path))
    assert cm.source.kind == "file"
    assert torch.all(cm.module.fc.bias == 3.0)
    assert isinstance(load_model("convscope.testing:tiny_model"), ConvModel)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_torchscript(tmp_path: Path) -> None:
    """Users still hold TorchScript files; making one needs the deprecated scripter."""
    path = tmp_path / "net.pt"
    torch.jit.script(TinyNet()).save(str(path))
    cm = load_model(str(path))
    assert cm.source.kind == "torchscript"
    x = torch.rand(1, 3, 8, 8)
    assert torch.allclose(cm(x), TinyNet()(x))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("missing.py:make", "does not exist"),
        ("convscope.testing:Nope", "no attribute"),
        ("no_such_package_xyz.mod:make", "cannot import"),
        ("convscope.testing:__doc__", "not an nn.Module"),
    ],
)
def test_bad_user_specs(spec: str, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        load_model(spec)


def test_syntax_error_in_user_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.py"
    f.write_text("def make(:\n")
    with pytest.raises(UserInputError, match="syntax error on line 1"):
        load_model(f"{f}:make")


def test_garbage_torchscript(tmp_path: Path) -> None:
    f = tmp_path / "junk.pt"
    f.write_bytes(b"not a zip")
    with pytest.raises(UserInputError, match="not a TorchScript file"):
        load_model(str(f))


def test_weights_not_fitting_user_model(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({"x": torch.zeros(1)}, str(path))
    with pytest.raises(WeightsUnavailableError, match="do not fit"):
        load_model("convscope.testing:TinyNet", weights=str(path))
