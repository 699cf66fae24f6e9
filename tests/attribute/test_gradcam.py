"""Grad-CAM on feature maps and gradients that are known exactly."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convscope.attribute import ClassTarget, NeuronTarget, saliency
from convscope.attribute.gradcam import NO_LAYER_MESSAGE, gradcam_low_res, gradcam_map
from convscope.errors import UnknownNameError, UserInputError
from convscope.models.base import ConvModel, Preprocess, WeightSource
from convscope.testing import TinyNet, all_hooks, same_state, state_copy, tiny_model

IDENTITY = Preprocess(resize=None, crop=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


class KnownNet(nn.Module):
    """feat: 2x2 stride-2 means of red (ch 0) and green (ch 1) → global mean → fc.

    So d logit_k / d feat[c, y, x] = fc[k, c] / (h * w) everywhere: the Grad-CAM weights are
    fc[k, c] / (h * w) and the CAM is ReLU(sum_c fc[k, c] feat_c) / (h * w)."""

    def __init__(self) -> None:
        super().__init__()
        self.feat = nn.Conv2d(3, 2, 2, stride=2, bias=False)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            w = torch.zeros(2, 3, 2, 2)
            w[0, 0] = 0.25
            w[1, 1] = 0.25
            self.feat.weight.copy_(w)
            self.fc.weight.copy_(torch.tensor([[2.0, -1.0], [-1.0, 0.5]]))
            self.fc.bias.copy_(torch.tensor([0.3, -0.2]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.gap(self.feat(x)).flatten(1))  # type: ignore[no-any-return]


def known_model() -> ConvModel:
    return ConvModel(
        "known",
        KnownNet(),
        IDENTITY,
        WeightSource("random"),
        classes=("x", "y"),
        default_layer="feat",
    )


def half_and_half() -> torch.Tensor:
    """Left half pure red, right half pure green: (1, 3, 8, 8)."""
    img = torch.zeros(1, 3, 8, 8)
    img[0, 0, :, :4] = 1.0
    img[0, 1, :, 4:] = 1.0
    return img


def test_gradcam_on_a_known_feature_map() -> None:
    cm = known_model()
    img = half_and_half()
    # feat (2, 4, 4): ch 0 is 1 on the left two columns, ch 1 is 1 on the right two.
    cam0 = gradcam_low_res(cm, img, [ClassTarget(0)])
    # class 0: 2 * red - green → +2 left, -1 right → ReLU → 2/16 left, 0 right
    want0 = torch.zeros(1, 4, 4)
    want0[0, :, :2] = 2.0 / 16
    assert torch.allclose(cam0, want0)
    cam1 = gradcam_low_res(cm, img, [ClassTarget(1)])
    # class 1: -red + 0.5 green → 0 left, 0.5/16 right
    want1 = torch.zeros(1, 4, 4)
    want1[0, :, 2:] = 0.5 / 16
    assert torch.allclose(cam1, want1)
    up = gradcam_map(cm, img, [ClassTarget(0)])
    assert up.shape == (1, 8, 8)
    want_up = F.interpolate(want0[:, None], size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(up, want_up[:, 0])
    assert (up >= 0).all()


def test_gradcam_batches_with_different_targets() -> None:
    cm = known_model()
    img = half_and_half().repeat(2, 1, 1, 1)
    both = gradcam_low_res(cm, img, [ClassTarget(0), ClassTarget(1)])
    assert torch.allclose(both[0], gradcam_low_res(cm, img[:1], [ClassTarget(0)])[0])
    assert torch.allclose(both[1], gradcam_low_res(cm, img[:1], [ClassTarget(1)])[0])


def test_gradcam_equals_the_definition_on_tiny() -> None:
    cm = tiny_model()
    net = cm.module
    assert isinstance(net, TinyNet)
    x = torch.rand(1, 3, 8, 8)
    a = net.relu2(net.conv2(net.pool1(net.relu1(net.conv1(x)))))  # (1, 2, 4, 4)
    logits = net.fc(net.flatten(net.gap(a)))
    (g,) = torch.autograd.grad(logits[0, 1], a)
    want = (g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1).clamp(min=0).detach()
    assert torch.allclose(gradcam_low_res(cm, x, [ClassTarget(1)]), want)
    assert torch.allclose(gradcam_low_res(cm, x, [ClassTarget(1)], layer="act"), want)  # alias


def test_gradcam_of_a_neuron_after_the_layer() -> None:
    cm = tiny_model()
    x = torch.rand(1, 3, 8, 8) + 0.1
    cam = gradcam_map(cm, x, [NeuronTarget("relu2", 0, (1, 1))], layer="relu1")
    assert cam.shape == (1, 8, 8) and (cam >= 0).all() and cam.sum() > 0
    with pytest.raises(UserInputError, match="comes after the neuron's layer relu1"):
        gradcam_map(cm, x, [NeuronTarget("relu1", 0)])  # default layer relu2 is later
    assert all_hooks(cm.module) == 0


def test_no_default_layer_is_one_sentence() -> None:
    cm = replace(tiny_model(), default_layer=None)
    with pytest.raises(UserInputError) as info:
        gradcam_map(cm, torch.rand(1, 3, 8, 8), [ClassTarget(0)])
    assert str(info.value) == NO_LAYER_MESSAGE
    assert NO_LAYER_MESSAGE == "--method gradcam needs --layer on a model with no default layer."
    # ... and saliency() says so before running anything else
    with pytest.raises(UserInputError, match="needs --layer"):
        saliency(cm, torch.rand(3, 8, 8), "nope-not-a-class", method="gradcam")
    assert gradcam_map(cm, torch.rand(1, 3, 8, 8), [ClassTarget(0)], layer="relu2").shape == (
        1,
        8,
        8,
    )


def test_bad_layers() -> None:
    cm = tiny_model()
    before = state_copy(cm.module)
    depth = int(torch._C._len_torch_function_stack())
    with pytest.raises(UnknownNameError, match="did you mean"):
        gradcam_map(cm, torch.rand(1, 3, 8, 8), [ClassTarget(0)], layer="relu3")
    with pytest.raises(UserInputError, match="needs a spatial layer"):
        gradcam_map(cm, torch.rand(1, 3, 8, 8), [ClassTarget(0)], layer="fc")
    assert all_hooks(cm.module) == 0
    assert int(torch._C._len_torch_function_stack()) == depth
    assert same_state(before, state_copy(cm.module))


def test_saliency_layer_without_channel_is_the_cam_layer() -> None:
    cm = tiny_model()
    x = torch.rand(3, 8, 8)
    a = saliency(cm, x, 0, method="gradcam", layer="relu1").maps
    b = gradcam_map(cm, x[None], [ClassTarget(0)], layer="relu1")
    assert torch.allclose(a, b)
