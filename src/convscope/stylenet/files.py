"""Style networks on disk: safetensors weights with JSON metadata, never a pickle.

    save_net(net, "starry.safetensors", styles=["starry_night"], training={...})
    net, info = load_net("starry.safetensors")

The metadata holds `format` ("convscope.stylenet/1"), the architecture (`norm`, `styles`),
the style names, the style images' thumbnail hashes, and the full training configuration
(whatever JSON the trainer gives). Loading reads the header first and refuses anything else:
a pickled torch file, a foreign safetensors file, a missing or mismatched tensor. Weights
round-trip bit for bit (the file stores them as they are, float32 or float16).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from convscope.data.stream import read_safetensors_header, save_tensors
from convscope.errors import UserInputError
from convscope.stylenet.net import NORMS, TransformerNet

__all__ = [
    "CHECKPOINT_FORMAT",
    "FORMAT",
    "Checkpoint",
    "NetInfo",
    "image_hash",
    "load_checkpoint",
    "load_net",
    "save_checkpoint",
    "save_net",
]

FORMAT = "convscope.stylenet/1"


@dataclass(frozen=True)
class NetInfo:
    """What a style network file says about itself."""

    norm: str
    styles: list[str]  # one name per style the network holds
    thumbnails: list[str] = field(default_factory=list)  # the style images' hashes
    training: dict[str, Any] = field(default_factory=dict)  # the trainer's configuration

    def index(self, style: str | int) -> int:
        """A style's index from its name or index (a one-sentence error otherwise)."""
        if isinstance(style, int) and not isinstance(style, bool):
            if 0 <= style < len(self.styles):
                return style
            raise UserInputError(
                f"style {style} is out of range: the network holds styles 0 to "
                f"{len(self.styles) - 1} ({', '.join(self.styles)})."
            )
        name = str(style)
        if name.isdigit():
            return self.index(int(name))
        if name in self.styles:
            return self.styles.index(name)
        raise UserInputError(
            f"the network has no style {name!r}; it holds {', '.join(self.styles)}."
        )

    def blend(self, weights: Mapping[str | int, float]) -> list[float]:
        """One weight per style from {name or index: weight} (the others 0), normalized to sum
        1; negative, non-finite or all-zero weights are a one-sentence error."""
        from convscope.synthesize.perceptual import blend_weights

        out = [0.0] * len(self.styles)
        for style, weight in weights.items():
            k = self.index(style)
            if not math.isfinite(weight) or weight < 0:
                raise UserInputError(
                    f"blend weights must be 0 or more, got {weight} for {self.styles[k]}."
                )
            out[k] += float(weight)
        return blend_weights(out, len(self.styles))


def save_net(
    net: TransformerNet,
    path: str | Path,
    *,
    styles: Sequence[str],
    thumbnails: Sequence[str] = (),
    training: Mapping[str, Any] | None = None,
    half: bool = False,
) -> Path:
    """Write `net` to `path` atomically; `half` stores the weights as float16 (half the
    size; loading gives float32 again)."""
    if len(styles) != net.styles:
        raise UserInputError(
            f"the network holds {net.styles} style{'s' if net.styles != 1 else ''}, "
            f"but {len(styles)} style names were given."
        )
    tensors = {}
    for name, t in net.state_dict().items():
        t = t.detach().cpu()
        tensors[name] = t.half() if half and t.is_floating_point() else t
    metadata = {
        "format": FORMAT,
        "norm": net.norm_kind,
        "styles": json.dumps(list(styles)),
        "thumbnails": json.dumps(list(thumbnails)),
        "training": json.dumps(dict(training or {}), sort_keys=True),
    }
    return save_tensors(tensors, path, metadata)


def _json(meta: Mapping[str, Any], key: str, path: Path) -> Any:
    try:
        return json.loads(meta.get(key, "null"))
    except (TypeError, json.JSONDecodeError):
        raise UserInputError(f"{path} is not a convscope style network (bad {key}).") from None


def load_net(
    path: str | Path, *, device: torch.device | str = "cpu"
) -> tuple[TransformerNet, NetInfo]:
    """The network in `path` (in eval mode) and its metadata; a one-sentence error for a file
    that is not a convscope style network."""
    p = Path(path)
    header, _ = read_safetensors_header(p, "style network (safetensors)")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserInputError(
            f"{p} is a safetensors file but not a convscope style network "
            f"(its metadata has no format {FORMAT!r})."
        )
    norm = meta.get("norm")
    styles = _json(meta, "styles", p)
    if norm not in NORMS or not isinstance(styles, list) or not styles:
        raise UserInputError(f"{p} is not a convscope style network (bad norm or styles).")
    info = NetInfo(
        norm=str(norm),
        styles=[str(s) for s in styles],
        thumbnails=[str(s) for s in (_json(meta, "thumbnails", p) or [])],
        training=dict(_json(meta, "training", p) or {}),
    )
    net = TransformerNet(norm=info.norm, styles=len(info.styles))  # type: ignore[arg-type]
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(p))
    except (SafetensorError, OSError) as exc:
        raise UserInputError(f"{p} could not be read as a style network ({exc}).") from None
    want = net.state_dict()
    missing = sorted(set(want) - set(state))
    extra = sorted(set(state) - set(want))
    if missing or extra:
        raise UserInputError(
            f"{p} does not fit a style network with {info.norm} norm and "
            f"{len(info.styles)} style{'s' if len(info.styles) != 1 else ''} "
            f"(missing {len(missing)} tensors, {len(extra)} unexpected)."
        )
    for name, t in state.items():
        if tuple(t.shape) != tuple(want[name].shape):
            raise UserInputError(
                f"{p}: tensor {name} is {tuple(t.shape)}, expected {tuple(want[name].shape)}."
            )
    net.load_state_dict({k: v.to(want[k].dtype) for k, v in state.items()})
    return net.to(device).eval(), info


CHECKPOINT_FORMAT = "convscope.stylenet-checkpoint/1"


def image_hash(image: Tensor) -> str:
    """The sha256 of an image's 8-bit RGB pixels and shape, which names a style image whatever
    file it came in (the network's "thumbnails" metadata; a checkpoint's configuration)."""
    import hashlib

    data = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).contiguous()
    head = f"{tuple(data.shape)}".encode()
    return hashlib.sha256(head + data.numpy().tobytes()).hexdigest()


@dataclass
class Checkpoint:
    """A training run's state after `step` steps, enough to resume it exactly (the run's
    random state is its seed and step; see `convscope.stylenet.train`)."""

    step: int
    net: dict[str, Tensor]
    optimizer: dict[str, Any]  # Adam's state_dict: "state" {index: {name: tensor}}, "param_groups"
    history: list[dict[str, float]]
    config: dict[str, Any]


def save_checkpoint(checkpoint: Checkpoint, path: str | Path) -> Path:
    """Write `checkpoint` atomically as safetensors (the tensors) with JSON metadata (the
    step, history, configuration and Adam's hyper-parameters); nothing is pickled."""
    c = checkpoint
    tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in c.net.items()}
    for index, state in c.optimizer["state"].items():
        for name, value in state.items():
            tensors[f"adam.{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "step": str(c.step),
        "history": json.dumps(c.history),
        "config": json.dumps(c.config, sort_keys=True),
        "param_groups": json.dumps(c.optimizer["param_groups"]),
    }
    return save_tensors(tensors, path, metadata)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint in `path`; a one-sentence error for any other file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    header, _ = read_safetensors_header(p, "training checkpoint (safetensors)")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise UserInputError(f"{p} is not a convscope style-network training checkpoint.")
    try:
        tensors = load_file(str(p))
        step = int(meta["step"])
        history = json.loads(meta["history"])
        config = json.loads(meta["config"])
        groups = json.loads(meta["param_groups"])
    except (SafetensorError, OSError, KeyError, ValueError, TypeError):
        raise UserInputError(f"{p} is a damaged style-network training checkpoint.") from None
    net = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
    state: dict[int, dict[str, Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("adam."):
            _, index, name = k.split(".", 2)
            state.setdefault(int(index), {})[name] = v
    return Checkpoint(step, net, {"state": state, "param_groups": groups}, history, config)
