"""Fast style transfer: feed-forward style networks (Johnson et al. 2016) with instance norm,
and one network for many styles with conditional instance norm (Dumoulin et al. 2017);
their ONNX export for onnxruntime."""

from convscope.stylenet.export import OnnxStylizer, check_onnx, export_onnx
from convscope.stylenet.files import (
    CHECKPOINT_FORMAT,
    FORMAT,
    Checkpoint,
    NetInfo,
    load_checkpoint,
    load_net,
    save_checkpoint,
    save_net,
)
from convscope.stylenet.net import (
    MIN_SIDE,
    NORMS,
    ConditionalInstanceNorm,
    TransformerNet,
    style_weights,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "FORMAT",
    "MIN_SIDE",
    "NORMS",
    "Checkpoint",
    "ConditionalInstanceNorm",
    "NetInfo",
    "OnnxStylizer",
    "TransformerNet",
    "check_onnx",
    "export_onnx",
    "load_checkpoint",
    "load_net",
    "save_checkpoint",
    "save_net",
    "style_weights",
]
