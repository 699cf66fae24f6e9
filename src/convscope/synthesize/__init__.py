"""Synthesis by gradient ascent on pixels: one mechanism for every technique.

    parameterized image → random transforms → model (through the Probe) → objective → step

- `objectives`: what to maximize, composed with `+`, `-`, `*` (`channel`, `class_logit`, …);
- `params`: the image as an `nn.Module` (pixels, Fourier, decorrelated colour);
- `transforms`: random jitter, scale, rotation, blur (`nn.Module`s);
- `optimize`: the one loop; `octaves`: multi-scale around it; `callbacks`: the papers'
  between-step image operations;
- `perceptual`: the content, style and TV losses of texture, style transfer and fast style
  networks, with their normalization; `colors`: colour control for style transfer;
- `efros_leung`: the non-neural texture synthesis baseline (Efros & Leung, Wei & Levoy);
- `recipes`: the techniques as short functions with paper presets.
"""

from __future__ import annotations

from convscope.synthesize.objectives import (
    OUTPUT,
    Inputs,
    Objective,
    Window,
    alpha_norm,
    blur_input_each_step,
    channel,
    class_logit,
    class_prob,
    deepdream,
    direction,
    diversity,
    feature_match,
    gram_match,
    gram_matrix,
    l1,
    l2,
    neuron,
    total,
    total_variation,
)
from convscope.synthesize.octaves import octave_sizes, octaves
from convscope.synthesize.optimize import (
    Run,
    StepEstimate,
    StepState,
    SynthesisProgress,
    SynthesisResult,
    estimate,
    optimize,
    seeded,
    tile_windows,
)
from convscope.synthesize.params import (
    ColorDecorrelation,
    FourierImage,
    ImageParam,
    ModelSpaceImage,
    PixelImage,
    image_param,
)
from convscope.synthesize.transforms import standard

__all__ = [
    "OUTPUT",
    "ColorDecorrelation",
    "FourierImage",
    "ImageParam",
    "Inputs",
    "ModelSpaceImage",
    "Objective",
    "PixelImage",
    "Run",
    "StepEstimate",
    "StepState",
    "SynthesisProgress",
    "SynthesisResult",
    "Window",
    "alpha_norm",
    "blur_input_each_step",
    "channel",
    "class_logit",
    "class_prob",
    "deepdream",
    "direction",
    "diversity",
    "estimate",
    "feature_match",
    "gram_match",
    "gram_matrix",
    "image_param",
    "l1",
    "l2",
    "neuron",
    "octave_sizes",
    "octaves",
    "optimize",
    "seeded",
    "standard",
    "tile_windows",
    "total",
    "total_variation",
]
