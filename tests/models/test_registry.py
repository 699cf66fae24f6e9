from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from convscope.errors import UnknownNameError, UserInputError, WeightsUnavailableError
from convscope.models import load_model, model_entries
from convscope.testing import TinyNet


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(UnknownNameError, match="resnet50") as err:
        load_model("resnet5O")
    assert "did you mean" in str(err.value)


def test_registry_lists_the_offline_models() -> None:
    names = {e.name for e in model_entries()}
    assert {"efficientnet_lite0", "vgg16", "tiny", "alexnet", "resnet50", "tv_vgg16"} <= names
    tiny = next(e for e in model_entries() if e.name == "tiny")
    assert tiny.availability() is None


def test_unknown_device_is_a_user_error() -> None:
    with pytest.raises(UserInputError, match="Unknown device"):
        load_model("tiny", device="tpu")


def test_random_weights_only_when_asked() -> None:
    assert load_model("tiny").source.kind == "package"
    assert load_model("tiny", weights="random").source.kind == "random"


def test_torchvision_offline_without_weights_names_both_options() -> None:
    with pytest.raises(WeightsUnavailableError) as err:
        load_model("resnet18")
    msg = str(err.value)
    assert "--weights DEFAULT" in msg and "--weights FILE" in msg


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_torchvision_local_state_dict(tmp_path: Path, fmt: str) -> None:
    torch.manual_seed(0)
    ref = torchvision.models.resnet18()
    path = tmp_path / f"r18.{fmt}"
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    else:
        torch.save(ref.state_dict(), path)
    cm = load_model("resnet18", weights=str(path))
    assert cm.source.kind == "file"
    for k, v in ref.state_dict().items():
        assert torch.equal(cm.module.state_dict()[k], v)
    assert cm.classes is not None and len(cm.classes) == 1000
    assert cm.preprocess.crop == 224
    x = torch.rand(1, 3, 64, 64)
    assert torch.allclose(cm(x), ref.eval()(x))


def test_torchvision_weights_that_do_not_fit(tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    save_file(TinyNet().state_dict(), str(path))
    with pytest.raises(WeightsUnavailableError, match="do not fit"):
        load_model("resnet18", weights=str(path))


def test_torchvision_default_download_path_uses_torchvision(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The online path: DEFAULT goes through torchvision's weights enum. Offline, the download
    fails and the error says what to do instead."""

    def offline(*_a: object, **_k: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailableError, match="--weights FILE"):
        load_model("squeezenet1_1", weights="DEFAULT")


def test_torchvision_default_from_hub_cache_is_offline() -> None:
    """A checkpoint already in torch's hub cache (as after an online run) loads with no network
    and is then the model's default."""
    weights = torchvision.models.get_model_weights("squeezenet1_1").DEFAULT
    ckpt = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(1)
    ref = torchvision.models.squeezenet1_1()
    torch.save(ref.state_dict(), ckpt)
    try:
        cm = load_model("squeezenet1_1")
        assert cm.source.kind == "url"
        assert torch.equal(cm.module.state_dict()["features.0.weight"], ref.features[0].weight)
        entry = next(e for e in model_entries() if e.name == "squeezenet1_1")
        assert entry.availability() is None
    finally:
        ckpt.unlink()


def test_torchvision_vgg_gets_aliases() -> None:
    cm = load_model("vgg19", weights="random")
    assert cm.resolve("relu5_4") == "features.35"
    assert cm.resolve("pool5") == "features.36"
    assert cm.default_layer == "features.35"


def test_bad_weights_name() -> None:
    with pytest.raises(UserInputError, match="DEFAULT, random"):
        load_model("alexnet", weights="IMAGENET")


def test_the_shipped_torchvision_list_matches_torchvision() -> None:
    """`convscope models` lists torchvision's architectures from a shipped copy (no torch
    import); for the installed torchvision it must equal what torchvision itself says."""
    import json
    from importlib.metadata import version

    from convscope.models import availability

    shipped = json.loads(
        (Path(availability.__file__).parent / "torchvision_models.json").read_text()
    )
    assert shipped["torchvision"] == version("torchvision").split("+")[0]
    assert availability.torchvision_models() == availability.live_torchvision_models()


@pytest.mark.parametrize(
    "env",
    [{}, {"TORCH_HOME": "/tmp/th"}, {"XDG_CACHE_HOME": "/tmp/xdg"}, {"TORCH_HOME": "~/t"}],
)
def test_the_hub_folder_is_torchs(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    from convscope.models.availability import torch_hub_dir

    for key in ("TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert torch_hub_dir() == Path(torch.hub.get_dir())


def test_listing_the_models_imports_no_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from convscope.models import model_entries\n"
        "rows = [(e.name, e.availability()) for e in model_entries()]\n"
        "assert len(rows) > 60\n"
        "print('TORCH', 'torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "TORCH False" in done.stdout
