"""ONNX export of the style network: onnxruntime gives PyTorch's clamped output at sizes that
are and are not multiples of 4 and at any batch, for every norm and for styles and blends;
bad choices are one sentence and write nothing; the caller's network is left as it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import pytest
import torch

from convscope.errors import ConvscopeError, UserInputError
from convscope.stylenet import OnnxStylizer, TransformerNet, check_onnx, export_onnx
from convscope.stylenet.export import INPUT, ONNX_FORMAT, OUTPUT
from convscope.testing import same_state, state_copy

pytestmark = pytest.mark.usefixtures("one_thread")


def _net(norm: str = "instance", styles: int = 1, seed: int = 0) -> TransformerNet:
    """A small-seeded network with random norm scales, shifts and running statistics (they
    start at 1 and 0), so that styles, and batch norm's eval and train modes, differ."""
    torch.manual_seed(seed)
    net = TransformerNet(norm=norm, styles=styles)  # type: ignore[arg-type]
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("scale", "shift", "norm.weight", "norm.bias")):
                p.copy_(torch.randn(p.shape) * 0.5 + (1.0 if "scale" in name else 0.0))
        for name, b in net.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape) + 0.5)
    return net


CASES = [
    ("instance", 1, None),
    ("batch", 1, None),
    ("conditional", 3, 1),
    ("conditional", 3, [0.2, 0.5, 0.3]),
]


@pytest.mark.parametrize(("norm", "styles", "style"), CASES)
def test_the_export_is_the_clamped_network_at_any_size(
    tmp_path: Path, norm: str, styles: int, style: Any
) -> None:
    net = _net(norm, styles)
    training = norm != "instance"  # batch norm in train mode: the export uses its eval mode
    net.train(training)
    before = state_copy(net)
    path = export_onnx(net, tmp_path / "net.onnx", style=style)
    assert path == tmp_path / "net.onnx" and path.is_file()
    assert net.training == training and same_state(before, state_copy(net))
    assert [p.name for p in tmp_path.iterdir()] == ["net.onnx"]  # no temporary file left
    # 37x53 and 50x70 are not multiples of 4 (the export traced 37x39), 64x96 is.
    worst = check_onnx(path, net, style=style, sizes=((37, 53), (50, 70), (64, 96)), atol=1e-4)
    assert 0 <= worst <= 1e-4
    assert net.training == training and same_state(before, state_copy(net))

    model = onnx.load(str(path))
    [image], [stylized] = model.graph.input, model.graph.output
    assert (image.name, stylized.name) == (INPUT, OUTPUT)
    dims = [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["convscope.format"] == ONNX_FORMAT and meta["convscope.norm"] == norm
    assert meta["convscope.clamped"] == "true"
    # A (3, H, W) image in, a (3, H, W) image out, in [0, 1].
    y = OnnxStylizer(path)(torch.rand(3, 41, 33))
    assert tuple(y.shape) == (3, 41, 33) and float(y.min()) >= 0 and float(y.max()) <= 1


def test_a_one_hot_index_is_the_one_hot_blend(tmp_path: Path) -> None:
    net = _net("conditional", 3, seed=1)
    by_index = OnnxStylizer(export_onnx(net, tmp_path / "index.onnx", style=2))
    by_blend = OnnxStylizer(export_onnx(net, tmp_path / "blend.onnx", style=[0.0, 0.0, 1.0]))
    x = torch.rand(2, 3, 45, 38, generator=torch.Generator().manual_seed(2))
    assert torch.equal(by_index(x), by_blend(x))
    with torch.no_grad():
        other = net.eval()(x, style=0).clamp(0, 1)
    assert not torch.allclose(by_index(x), other, atol=1e-3)  # the style is baked in


def test_bad_choices_are_one_sentence_and_write_nothing(tmp_path: Path) -> None:
    multi, single = _net("conditional", 3), _net()
    cases: list[tuple[TransformerNet, Any, str]] = [
        (multi, 3, "style 3 is out of range"),
        (multi, -1, "style -1 is out of range"),
        (multi, [0, 0, 0], "at least one style blend weight must be above 0"),
        (multi, [-1, 2, 0], "must be 0 or more"),
        (multi, [1, 2], "2 style blend weights for 3 style images"),
        (multi, None, "holds 3 styles; choose one"),
        (multi, torch.ones(2, 3), "bakes in one style for every image"),
        (single, 1, "holds one style"),
    ]
    for net, style, message in cases:
        with pytest.raises(UserInputError, match=message):
            export_onnx(net, tmp_path / "net.onnx", style=style)
    for opset in (10, 99, 17.0):
        with pytest.raises(UserInputError, match="opset"):
            export_onnx(single, tmp_path / "net.onnx", opset=opset)  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="does not exist"):
        export_onnx(single, tmp_path / "absent" / "net.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_export_leaves_the_target_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "net.onnx"
    target.write_bytes(b"old")

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the exporter broke")

    monkeypatch.setattr(torch.onnx, "export", fail)
    with pytest.raises(RuntimeError, match="the exporter broke"):
        export_onnx(_net(), target)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["net.onnx"]


def test_checks_refuse_other_networks_and_files(tmp_path: Path) -> None:
    net = _net()
    path = export_onnx(net, tmp_path / "net.onnx")
    with pytest.raises(ConvscopeError, match="differs from the network by up to"):
        check_onnx(path, _net(seed=5), sizes=((40, 36),))
    with pytest.raises(UserInputError, match="at least 32 each"):
        check_onnx(path, net, sizes=((31, 64),))
    with pytest.raises(UserInputError, match="at least 32 px a side"):
        OnnxStylizer(path)(torch.rand(1, 3, 31, 64))
    with pytest.raises(UserInputError, match="does not exist"):
        OnnxStylizer(tmp_path / "absent.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(UserInputError, match="Cannot read"):
        OnnxStylizer(tmp_path / "junk.onnx")
