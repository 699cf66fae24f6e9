"""Fast style transfer: feed-forward style networks (Johnson et al. 2016) with instance norm,
and one network for many styles with conditional instance norm (Dumoulin et al. 2017)."""

from convscope.stylenet.files import FORMAT, NetInfo, load_net, save_net
from convscope.stylenet.net import (
    MIN_SIDE,
    NORMS,
    ConditionalInstanceNorm,
    TransformerNet,
    style_weights,
)

__all__ = [
    "FORMAT",
    "MIN_SIDE",
    "NORMS",
    "ConditionalInstanceNorm",
    "NetInfo",
    "TransformerNet",
    "load_net",
    "save_net",
    "style_weights",
]
