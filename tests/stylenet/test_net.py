"""The feed-forward style network: Johnson's architecture, sizes, instance norm against its
definition, conditional instance norm and its blends, and files that round-trip bit for bit
and refuse what is not ours."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from convscope.data.stream import save_tensors
from convscope.errors import UserInputError
from convscope.stylenet import (
    ConditionalInstanceNorm,
    TransformerNet,
    load_net,
    save_net,
    style_weights,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _randomized(net: TransformerNet, seed: int = 0) -> TransformerNet:
    """Random norm scales and shifts too (they start at 1 and 0), so styles differ."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("scale", "shift", "norm.weight", "norm.bias")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if "scale" in name else 0))
    return net.eval()


def _image(h: int = 40, w: int = 48, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_the_architecture_is_johnsons() -> None:
    net = TransformerNet()
    # pytorch/examples' fast_neural_style TransformerNet has exactly this many parameters.
    assert sum(p.numel() for p in net.parameters()) == 1_679_235
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size[0] for c in convs] == [9, 3, 3, *[3] * 10, 3, 3, 9]
    assert [c.stride[0] for c in convs] == [1, 2, 2, *[1] * 10, 1, 1, 1]
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules())
    assert sum(isinstance(m, torch.nn.ReflectionPad2d) for m in net.modules()) == len(convs)


@given(h=st.integers(32, 61), w=st.integers(32, 61))
@settings(max_examples=12, deadline=None)
def test_the_output_has_the_inputs_size(h: int, w: int) -> None:
    net = TransformerNet().eval()
    with torch.no_grad():
        assert tuple(net(torch.rand(2, 3, h, w)).shape) == (2, 3, h, w)


def test_inputs_below_32_px_are_refused() -> None:
    with pytest.raises(UserInputError, match="at least 32 px"):
        TransformerNet()(torch.rand(1, 3, 31, 64))
    with pytest.raises(UserInputError, match=r"\(B, 3, H, W\)"):
        TransformerNet()(torch.rand(3, 40, 40))


def test_conditional_instance_norm_is_its_definition() -> None:
    norm = ConditionalInstanceNorm(4, styles=2)
    with torch.no_grad():
        norm.scale.copy_(torch.tensor([[1.0, 2.0, 0.5, -1.0], [0.3, 0.3, 0.3, 0.3]]))
        norm.shift.copy_(torch.tensor([[0.0, 1.0, -1.0, 2.0], [5.0, 5.0, 5.0, 5.0]]))
    x = torch.randn(3, 4, 5, 6, generator=torch.Generator().manual_seed(1)) * 3 + 1
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), unbiased=False, keepdim=True)
    unit = (x - mean) / torch.sqrt(var + 1e-5)
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.25, 0.75]])
    gamma, beta = weights @ norm.scale.detach(), weights @ norm.shift.detach()
    want = unit * gamma[:, :, None, None] + beta[:, :, None, None]
    assert torch.allclose(norm(x, weights), want, atol=1e-5)
    # One style of the conditional norm is torch's affine instance norm with that γ, β.
    inorm = torch.nn.InstanceNorm2d(4, affine=True)
    with torch.no_grad():
        inorm.weight.copy_(norm.scale[0])
        inorm.bias.copy_(norm.shift[0])
    assert torch.allclose(norm(x, weights[:1].expand(3, 2)), inorm(x), atol=1e-5)


def test_one_style_of_a_conditional_net_is_a_single_style_net() -> None:
    multi = _randomized(TransformerNet(norm="conditional", styles=3), seed=2)
    x = _image()
    k = 2
    single = TransformerNet(norm="instance").eval()
    state = {}
    for name, t in multi.state_dict().items():
        if name.endswith("norm.scale"):
            state[name.replace("norm.scale", "norm.weight")] = t[k]
        elif name.endswith("norm.shift"):
            state[name.replace("norm.shift", "norm.bias")] = t[k]
        else:
            state[name] = t
    single.load_state_dict(state)
    with torch.no_grad():
        by_index = multi(x, style=k)
        one_hot = multi(x, style=[0.0, 0.0, 1.0])
        assert torch.equal(by_index, one_hot)
        assert torch.allclose(by_index, single(x), atol=1e-5)
        assert not torch.allclose(by_index, multi(x, style=0), atol=1e-3)


def test_blend_weights_are_normalized_to_sum_one() -> None:
    w = style_weights([3, 7], styles=2, batch=2)
    assert torch.allclose(w, torch.tensor([[0.3, 0.7], [0.3, 0.7]]))
    net = _randomized(TransformerNet(norm="conditional", styles=2), seed=3)
    x = _image()
    with torch.no_grad():
        assert torch.allclose(net(x, style=[3, 7]), net(x, style=[0.3, 0.7]), atol=1e-6)
        rows = torch.tensor([[1.0, 0.0], [2.0, 2.0]])
        both = net(x.expand(2, 3, 40, 48), style=rows)
        assert torch.allclose(both[0], net(x, style=0)[0], atol=1e-5)
        assert torch.allclose(both[1], net(x, style=[0.5, 0.5])[0], atol=1e-5)
    cases = [
        ([0, 0], "at least one style blend weight must be above 0"),
        ([-1, 2], "must be 0 or more"),
        ([1, float("nan")], "must be 0 or more"),
        ([1, 2, 3], "3 style blend weights for 2 style images"),
        (2, "style 2 is out of range"),
        (None, "holds 2 styles; choose one"),
    ]
    for style, message in cases:
        with pytest.raises(UserInputError, match=message):
            net(x, style=style)  # type: ignore[arg-type]


def test_norm_choices_and_their_checks() -> None:
    x = _image()
    batch = TransformerNet(norm="batch")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in batch.modules())
    assert tuple(batch.eval()(x).shape) == (1, 3, 40, 48)
    with pytest.raises(UserInputError, match="need norm='conditional'"):
        TransformerNet(norm="instance", styles=2)
    with pytest.raises(UserInputError, match="--norm must be"):
        TransformerNet(norm="group")  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="holds one style"):
        TransformerNet()(x, style=1)


def test_save_and_load_round_trip_bit_for_bit(tmp_path: Path) -> None:
    net = _randomized(TransformerNet(norm="conditional", styles=2), seed=4)
    path = save_net(
        net,
        tmp_path / "net.safetensors",
        styles=["starry", "scream"],
        thumbnails=["ab12", "cd34"],
        training={"steps": 20, "size": 64},
    )
    again, info = load_net(path)
    assert info.styles == ["starry", "scream"] and info.norm == "conditional"
    assert info.thumbnails == ["ab12", "cd34"] and info.training == {"size": 64, "steps": 20}
    assert info.index("scream") == 1 and info.index("0") == 0
    before, after = net.state_dict(), again.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # The same network gives the same bytes.
    assert save_net(net, tmp_path / "b.safetensors", styles=info.styles, thumbnails=info.thumbnails,
                    training=info.training).read_bytes() == path.read_bytes()  # fmt: skip
    half, _ = load_net(save_net(net, tmp_path / "h.safetensors", styles=info.styles, half=True))
    x = _image()
    with torch.no_grad():
        assert torch.allclose(half(x, style=1), net(x, style=1), atol=5e-2)
    with pytest.raises(UserInputError, match="no style 'picasso'; it holds starry, scream"):
        info.index("picasso")
    with pytest.raises(UserInputError, match="style 5 is out of range"):
        info.index(5)


def test_loading_refuses_pickles_and_foreign_files(tmp_path: Path) -> None:
    net = TransformerNet()
    pickled = tmp_path / "net.pt"
    torch.save(net.state_dict(), pickled)
    with pytest.raises(UserInputError, match="is not a style network"):
        load_net(pickled)
    foreign = save_tensors({"w": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(UserInputError, match="not a convscope style network"):
        load_net(foreign)
    wrong = save_tensors(
        {"w": torch.zeros(2)},
        tmp_path / "wrong.safetensors",
        {"format": "convscope.stylenet/1", "norm": "instance", "styles": '["a"]'},
    )
    with pytest.raises(UserInputError, match="with instance norm and 1 style "):
        load_net(wrong)
    with pytest.raises(UserInputError, match="does not exist"):
        load_net(tmp_path / "absent.safetensors")
    with pytest.raises(UserInputError, match="2 style names"):
        save_net(net, tmp_path / "x.safetensors", styles=["a", "b"])


@settings(max_examples=15, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), channels=st.integers(1, 4))
def test_the_upsampling_conv_equals_upsample_pad_conv(h: int, w: int, channels: int) -> None:
    """The fast path (four 2×2 convs on the small image) against the straightforward one
    (nearest ×2, reflection pad 1, 3×3 conv), in float64, values and gradients."""
    from convscope.stylenet.net import upsample_conv

    g = torch.Generator().manual_seed(h * 100 + w * 10 + channels)
    x = torch.randn(2, channels, h + 1, w + 1, generator=g, dtype=torch.float64)
    weight = torch.randn(3, channels, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(3, generator=g, dtype=torch.float64)
    x.requires_grad_(True)
    weight.requires_grad_(True)
    fast = upsample_conv(x, weight, bias)
    up = F.pad(F.interpolate(x, scale_factor=2.0, mode="nearest"), (1, 1, 1, 1), mode="reflect")
    slow = F.conv2d(up, weight, bias)
    assert fast.shape == slow.shape == (2, 3, 2 * h + 2, 2 * w + 2)
    assert torch.allclose(fast, slow, atol=1e-10)
    probe = torch.randn(slow.shape, generator=g, dtype=torch.float64)
    gf = torch.autograd.grad((fast * probe).sum(), [x, weight])
    gs = torch.autograd.grad((slow * probe).sum(), [x, weight])
    assert all(torch.allclose(a, b, atol=1e-9) for a, b in zip(gf, gs, strict=True))


def test_blend_grids_run_corner_to_corner() -> None:
    from convscope.stylenet.net import blend_grid

    row = blend_grid([2, 0], 3, steps=5)
    assert tuple(row.shape) == (5, 3)
    assert torch.equal(row[0], torch.tensor([0.0, 0.0, 1.0]))
    assert torch.equal(row[-1], torch.tensor([1.0, 0.0, 0.0]))
    square = blend_grid([0, 1, 2, 3], 4, steps=3)
    assert tuple(square.shape) == (9, 4)
    assert torch.allclose(square.sum(dim=1), torch.ones(9))
    assert torch.equal(square[[0, 2, 6, 8]], torch.eye(4))  # the corners
    assert torch.allclose(square[4], torch.full((4,), 0.25))  # the middle
    with pytest.raises(UserInputError, match="two or four"):
        blend_grid([0, 1, 2], 3)
