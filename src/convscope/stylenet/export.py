"""Style networks as ONNX files, to stylize with onnxruntime (or any ONNX runtime) without
convscope:

    path = export_onnx(net, "starry.onnx")                      # a one-style network
    path = export_onnx(net, "blend.onnx", style=[0.3, 0.7, 0, 0])  # a conditional one's blend
    check_onnx(path, net, style=[0.3, 0.7, 0, 0])               # max |ONNX − PyTorch|, or raise
    run = OnnxStylizer(path)
    y = run(x)                                                  # x, y: (B, 3, H, W) in [0, 1]

The graph takes `image`, (B, 3, H, W) float32 in [0, 1], and gives `stylized`, the network's
output **clamped to [0, 1]** (what `stylize` gives; the unclamped output only matters for
training), of the same size. The batch, height and width are dynamic: any batch and any side
of at least 32 px, multiples of 4 or not (the network's pad and crop are traced from the
input's shape, see `TransformerNet._traceable`).

- **Styles.** A conditional network's style, an index or blend weights (normalized to sum 1,
  as in `net(x, style=...)`), is baked in as constants: one file per style or blend. A
  one-style network takes no style (or style 0). The file's metadata records the norm, the
  style count and the weights baked in.
- **The caller's network** is not touched: an eval-mode float32 CPU copy is exported.
- **The file** is written atomically, weights inside: a failed export leaves no file.
- **The exporter** is torch's TorchScript one (`dynamo=False`); the torch.export-based one
  needs `onnxscript`, which convscope does not depend on.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.jit import TracerWarning  # type: ignore[attr-defined]

from convscope.data.files import atomic_path, check_writable
from convscope.errors import ConvscopeError, UserInputError, check_number, check_whole
from convscope.models.base import check_image_batch
from convscope.stylenet.net import MIN_SIDE, StyleChoice, TransformerNet

__all__ = ["INPUT", "ONNX_FORMAT", "OUTPUT", "OnnxStylizer", "check_onnx", "export_onnx"]

INPUT = "image"
"""The graph's input: (B, 3, H, W) float32 in [0, 1]."""
OUTPUT = "stylized"
"""The graph's output: (B, 3, H, W) float32 in [0, 1]."""
ONNX_FORMAT = "convscope.stylenet.onnx/1"
"""The `convscope.format` metadata of an exported file."""
_MIN_OPSET, _MAX_OPSET = 11, 20  # reflect Pad with traced pads needs 11; the exporter stops at 20
_AXES = {0: "batch", 2: "height", 3: "width"}


def _baked(net: TransformerNet, style: StyleChoice) -> list[float] | None:
    """The style weights an export bakes in (one row, summing to 1), or None for a one-style
    network; a one-sentence error for a bad choice."""
    if not isinstance(net, TransformerNet):
        raise UserInputError(f"only a TransformerNet can be exported, not {type(net).__name__}.")
    if isinstance(style, Tensor) and style.dim() == 2:
        if style.shape[0] != 1:
            raise UserInputError(
                "an ONNX export bakes in one style for every image; give an index or one row "
                f"of blend weights, not a {tuple(style.shape)} tensor."
            )
        style = style[0]
    weights = net._weights(style, 1, torch.device("cpu"))
    return None if weights is None else [float(v) for v in weights[0]]


class _Clamped(nn.Module):
    """The network with its style fixed and its output clamped: what the ONNX graph holds."""

    def __init__(self, net: TransformerNet, style: list[float] | None) -> None:
        super().__init__()
        self.net = net
        self.style = style

    def forward(self, image: Tensor) -> Tensor:
        out: Tensor = self.net(image, style=self.style)
        return out.clamp(0.0, 1.0)


def _eval_copy(net: TransformerNet) -> TransformerNet:
    """A float32 CPU copy in eval mode, without gradients; `net` is left as it was."""
    copy = TransformerNet(norm=net.norm_kind, styles=net.styles)
    copy.load_state_dict({k: v.detach().float().cpu() for k, v in net.state_dict().items()})
    return copy.eval().requires_grad_(False)


def export_onnx(
    net: TransformerNet, path: str | Path, *, style: StyleChoice = None, opset: int = 17
) -> Path:
    """Write `net` (with `style` baked in) to the ONNX file `path` and return the path (see
    the module docstring)."""
    weights = _baked(net, style)
    check_whole(opset, "the ONNX opset", least=_MIN_OPSET)
    if opset > _MAX_OPSET:
        raise UserInputError(
            f"the ONNX opset must be from {_MIN_OPSET} to {_MAX_OPSET}, got {opset}."
        )
    target = Path(path)
    check_writable(target)
    import onnx  # here, not at import: most of convscope never needs it

    model = _Clamped(_eval_copy(net), weights)
    # Any size traces the same graph (no Python branch depends on it); not multiples of 4.
    example = torch.rand(
        1, 3, MIN_SIDE + 5, MIN_SIDE + 7, generator=torch.Generator().manual_seed(0)
    )
    with atomic_path(target) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            # The legacy exporter's deprecation notice, trace warnings from torch's own shape
            # checks (recorded as constants, harmless) and constant-folding notes.
            warnings.simplefilter("ignore", TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", "Constant folding", UserWarning)
            warnings.filterwarnings("ignore", "ONNX export mode", UserWarning)
            torch.onnx.export(
                model,
                (example,),
                str(tmp),
                dynamo=False,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: _AXES, OUTPUT: _AXES},
                opset_version=opset,
                do_constant_folding=True,
            )
        proto = onnx.load(str(tmp))
        meta = {
            "format": ONNX_FORMAT,
            "norm": net.norm_kind,
            "styles": str(net.styles),
            "style_weights": json.dumps(weights),
            "clamped": "true",
        }
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = f"convscope.{key}", value
        proto.doc_string = "convscope style network: image (B, 3, H, W) in [0, 1] → stylized."
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
    return target


class OnnxStylizer:
    """An onnxruntime session on an exported style network, on the CPU: `run(x)` stylizes
    a (B, 3, H, W) or (3, H, W) tensor in [0, 1] and returns a CPU tensor of the same shape.

    The session applies every graph optimization and uses `threads` intra-op threads
    (`torch.get_num_threads()` by default, so it competes with torch on equal terms), one
    inter-op thread and sequential execution."""

    def __init__(self, path: str | os.PathLike[str], *, threads: int | None = None) -> None:
        import onnxruntime as ort  # here, not at import: most of convscope never needs it

        self.path = Path(path)
        if not self.path.is_file():
            raise UserInputError(f"The ONNX file {self.path} does not exist.")
        self.threads = torch.get_num_threads() if threads is None else check_whole(
            threads, "threads"
        )  # fmt: skip
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        try:
            self.session: Any = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime's InvalidProtobuf, Fail, ...
            raise UserInputError(
                f"Cannot read {self.path} as an ONNX file ({type(exc).__name__})."
            ) from exc
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != [INPUT] or OUTPUT not in outputs:
            raise UserInputError(
                f"{self.path} is not an exported style network: it takes {inputs} and gives "
                f"{outputs}, not [{INPUT!r}] and {OUTPUT!r}."
            )

    def __call__(self, x: Tensor) -> Tensor:
        batch = check_image_batch(x, "the input image")
        if min(int(batch.shape[-2]), int(batch.shape[-1])) < MIN_SIDE:
            h, w = int(batch.shape[-2]), int(batch.shape[-1])
            raise UserInputError(
                f"the input is {w}x{h}; the style network needs at least {MIN_SIDE} px a side."
            )
        array = batch.detach().to("cpu", torch.float32).contiguous().numpy()
        [y] = self.session.run([OUTPUT], {INPUT: array})
        out = torch.from_numpy(y)
        return out if x.dim() == 4 else out[0]


def check_onnx(
    path: str | os.PathLike[str],
    net: TransformerNet,
    *,
    style: StyleChoice = None,
    sizes: Sequence[tuple[int, int]] = ((37, 53), (64, 96)),
    atol: float = 1e-4,
) -> float:
    """The largest |ONNX − PyTorch| over a fixed random batch of 2 at each (H, W) in `sizes`,
    against `net(x, style=style)` clamped to [0, 1] (in eval mode, restored afterwards);
    raises `ConvscopeError` when it is above `atol`."""
    weights = _baked(net, style)
    check_number(atol, "the tolerance")
    shapes = [tuple(hw) for hw in sizes]
    for hw in shapes:
        ok = len(hw) == 2 and all(
            isinstance(s, int) and not isinstance(s, bool) and s >= MIN_SIDE for s in hw
        )
        if not ok:
            raise UserInputError(
                f"a size to check is (H, W) of at least {MIN_SIDE} each, got {hw}."
            )
    if not shapes:
        raise UserInputError("there are no sizes to check the ONNX file at.")
    run = OnnxStylizer(path)
    device = next(net.parameters()).device
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    was_training = net.training
    try:
        net.eval()
        for h, w in shapes:
            x = torch.rand(2, 3, h, w, generator=g)
            with torch.inference_mode():
                want = net(x.to(device), style=weights).float().clamp(0.0, 1.0).cpu()
            got = run(x)
            if got.shape != want.shape:
                raise ConvscopeError(
                    f"the ONNX file {run.path} gives {tuple(got.shape)} for a {tuple(x.shape)} "
                    f"input, not {tuple(want.shape)}."
                )
            diff = float((got - want).abs().max())
            if not diff <= atol:  # NaN too
                raise ConvscopeError(
                    f"the ONNX file {run.path} differs from the network by up to {diff:.3g} "
                    f"at {w}x{h} (more than {atol:g})."
                )
            worst = max(worst, diff)
    finally:
        net.train(was_training)
    return worst
