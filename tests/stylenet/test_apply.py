"""Stylizing in one pass: the network's output clamped, per image and per batch, sizes,
blends, preserved colour, progress, and the caller's network and tensors left as they were."""

from __future__ import annotations

import pytest
import torch

from convscope.errors import UserInputError
from convscope.events import Progress
from convscope.stylenet import TransformerNet
from convscope.stylenet.apply import stylize
from convscope.synthesize.colors import original_colors, rgb_to_ycbcr

pytestmark = pytest.mark.usefixtures("one_thread")


def _net(styles: int = 1) -> TransformerNet:
    torch.manual_seed(0)
    norm = "conditional" if styles > 1 else "instance"
    net = TransformerNet(norm=norm, styles=styles)  # type: ignore[arg-type]
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("scale", "shift")):
                p.add_(torch.randn(p.shape) * 0.5)
    return net


def _images() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.rand(3, 40, 48, generator=g), torch.rand(3, 36, 36, generator=g),
            torch.rand(3, 40, 48, generator=g)]  # fmt: skip


def test_each_image_is_the_networks_output_clamped() -> None:
    net, images = _net(), _images()
    copies = [x.clone() for x in images]
    net.train()
    events: list[Progress] = []
    outs = stylize(net, images, batch=2, precision="fp32", on_progress=events.append)
    assert net.training  # left as it was
    assert all(torch.equal(a, b) for a, b in zip(images, copies, strict=True))
    assert [tuple(o.shape) for o in outs] == [(3, 40, 48), (3, 36, 36), (3, 40, 48)]
    net.eval()
    with torch.no_grad():
        for x, y in zip(images, outs, strict=True):
            assert torch.allclose(y, net(x[None])[0].clamp(0, 1), atol=1e-5)
    assert events[-1].done == events[-1].total == 3 and all(float(o.min()) >= 0 for o in outs)


def test_bfloat16_is_close_to_float32() -> None:
    """The reduced-precision path (the default where bfloat16 is native) within the tolerance
    the module documents."""
    net, images = _net(), _images()
    exact = stylize(net, images, precision="fp32")
    fast = stylize(net, images, precision="bf16")
    for a, b in zip(exact, fast, strict=True):
        assert float((a - b).abs().max()) < 0.06 and float((a - b).abs().mean()) < 0.01
    with pytest.raises(UserInputError, match="--precision"):
        stylize(net, images, precision="fp16")


def test_a_batch_tensor_sizes_and_blends() -> None:
    net = _net(styles=2)
    x = torch.stack([_images()[0], _images()[2]])  # (2, 3, 40, 48)
    a, b = stylize(net, x, style=1, size=64)
    assert tuple(a.shape) == tuple(b.shape) == (3, 53, 64)
    [m] = stylize(net, x[:1], style=[1, 1])
    [h] = stylize(net, x[:1], style=[0.5, 0.5])
    assert torch.equal(m, h)
    with pytest.raises(UserInputError, match="holds 2 styles"):
        stylize(net, x)


def test_preserve_color_keeps_the_inputs_chroma() -> None:
    net, images = _net(), _images()[:1]
    [plain] = stylize(net, images)
    [kept] = stylize(net, images, preserve_color=True)
    assert torch.allclose(kept, original_colors(plain, images[0]), atol=1e-6)
    chroma = rgb_to_ycbcr(kept[None])[0, 1:] - rgb_to_ycbcr(images[0][None])[0, 1:]
    inside = ((kept > 1e-3) & (kept < 1 - 1e-3)).all(dim=0)  # not clamped into the RGB cube
    assert int(inside.sum()) > 50
    assert float(chroma[:, inside].abs().max()) < 1e-4


def test_bad_input_is_one_sentence() -> None:
    net = _net()
    cases = [
        ({"images": [torch.rand(3, 20, 64)]}, "at least 32 px a side"),
        ({"images": [], "size": None}, "no images"),
        ({"images": _images(), "size": 16}, "--size must be at least 32"),
        ({"images": _images(), "batch": 0}, "--batch must be"),
        ({"images": _images(), "style": 1}, "holds one style"),
    ]
    for kwargs, message in cases:
        with pytest.raises(UserInputError, match=message):
            stylize(net, **kwargs)  # type: ignore[arg-type]
