"""The style networks shipped in the package, by name, and opening a network by name or file:

    net, info = open_net("four-styles")          # starry_night, the_scream, shipwreck, matisse
    net, info = open_net("my_net.safetensors")   # any file `convscope stylenet train` wrote

Each shipped network has a model card beside it (`card_path`) that records how it was
trained: the command, steps, wall time, hardware and final losses.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from convscope.errors import UnknownNameError, UserInputError
from convscope.stylenet.files import NetInfo, load_net
from convscope.stylenet.net import TransformerNet

__all__ = ["SHIPPED", "ShippedNet", "card_path", "net_names", "net_path", "open_net"]


@dataclass(frozen=True)
class ShippedNet:
    file: str  # in convscope/stylenet/weights
    card: str
    summary: str


SHIPPED: dict[str, ShippedNet] = {
    "four-styles": ShippedNet(
        "four_styles.safetensors",
        "four_styles.md",
        "starry_night, the_scream, shipwreck and woman-with-hat-matisse in one network "
        "(conditional instance norm), blendable",
    ),
}


def net_names() -> list[str]:
    """The names of the shipped networks."""
    return sorted(SHIPPED)


def _weights_dir() -> Path:
    return Path(str(resources.files("convscope.stylenet") / "weights"))


def net_path(name: str) -> Path:
    """The file of a shipped network."""
    if name not in SHIPPED:
        raise UnknownNameError("style network", name, net_names())
    return _weights_dir() / SHIPPED[name].file


def card_path(name: str) -> Path:
    """The model card of a shipped network."""
    if name not in SHIPPED:
        raise UnknownNameError("style network", name, net_names())
    return _weights_dir() / SHIPPED[name].card


def open_net(
    spec: str | Path, *, device: torch.device | str = "cpu"
) -> tuple[TransformerNet, NetInfo]:
    """A shipped network by name, or a network file (an existing path wins)."""
    path = Path(spec)
    if str(spec) and path.exists():
        return load_net(path, device=device)
    if isinstance(spec, str) and spec in SHIPPED:
        return load_net(net_path(spec), device=device)
    if isinstance(spec, Path) or "/" in str(spec) or str(spec).endswith(".safetensors"):
        raise UserInputError(f"style network file {spec} does not exist.")
    raise UnknownNameError(
        "style network", str(spec), net_names(), hint="A .safetensors file works too."
    )
