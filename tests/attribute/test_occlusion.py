"""Occlusion maps: meaning, exactness against the straightforward loop, the work-skipping plan,
fast mode's tolerance, fills, bad input, and no side effects."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor, nn

import convscope.device
from convscope.attribute import occlusion as occ
from convscope.attribute import occlusion_plan as plan_mod
from convscope.attribute.occlusion import FAST_TOLERANCE, occlusion_map
from convscope.attribute.targets import ClassTarget, NeuronTarget
from convscope.errors import UserInputError
from convscope.events import Progress
from convscope.models.base import ConvModel, Preprocess, WeightSource
from convscope.models.graph import Traced
from convscope.probe import capture
from convscope.testing import all_hooks, same_state, state_copy

pytestmark = pytest.mark.usefixtures("one_thread")


IDENTITY = Preprocess(resize=None, crop=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
RECT = (10, 18, 6, 12)  # y0, y1, x0, x1 of the region the score reads (end exclusive)


class RegionNet(nn.Module):
    """A 3×3 box mean of the image's gray level, ReLU, then only a fixed rectangle counts:
    logits = (s, -s) with s = the sum of the rectangle."""

    def __init__(self, size: int = 32) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        mask = torch.zeros(1, 1, size, size)
        y0, y1, x0, x1 = RECT
        mask[..., y0:y1, x0:x1] = 1
        self.register_buffer("mask", mask)
        with torch.no_grad():
            self.conv.weight.fill_(1 / 27)

    def forward(self, x: Tensor) -> Tensor:
        s = (self.relu(self.conv(x)) * self.mask).sum(dim=(1, 2, 3)) / 10
        return torch.stack([s, -s], dim=1)


class GlobalNet(nn.Module):
    """conv → squeeze-excite-like global gate → conv → pool → fc: the gate reads the whole
    map, so work can only be skipped before it."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU6()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        assert self.bn.running_mean is not None and self.bn.running_var is not None
        self.bn.running_mean.uniform_(-0.2, 0.2, generator=g)
        self.bn.running_var.uniform_(0.5, 1.5, generator=g)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.bn(self.conv1(x)))
        x = x * torch.sigmoid(x.mean(dim=(2, 3), keepdim=True))
        x = torch.relu(self.conv2(x))
        return self.fc(self.pool(x).flatten(1))  # type: ignore[no-any-return]


class ZooNet(nn.Module):
    """Many local layer kinds: strided and dilated convs, padded max and avg pools, an in-place
    ReLU, a strided 1×1 shortcut added in place, and a channel concat."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(2)
        self.conv1 = nn.Conv2d(3, 8, 5, stride=2, padding=2)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(3, 2, padding=1)
        self.conv_a = nn.Conv2d(8, 8, 3, padding=1)
        self.conv_b = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.down = nn.Conv2d(8, 8, 1, stride=2)
        self.branch = nn.Conv2d(8, 4, 3, padding=2, dilation=2)
        self.avg = nn.AvgPool2d(3, 1, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 4)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.4)
            self.fc.weight.mul_(0.1)  # probabilities away from 0 and 1

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.relu(self.bn1(self.conv1(x))))
        y = self.conv_b(self.relu(self.conv_a(x)))
        y += self.down(x)
        y = self.relu(y)
        z = torch.cat([y, self.avg(self.branch(y))], dim=1)
        return self.fc(self.gap(z).flatten(1))  # type: ignore[no-any-return]


class AliasNet(nn.Module):
    """An activation behind an identity whose input is also read by a residual add: running
    it in place would corrupt the add."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.same = nn.Identity()
        self.act = nn.ReLU6()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.act2 = nn.ReLU6()
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            self.fc.weight.mul_(0.1)  # probabilities away from 0 and 1

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        z = self.act(self.same(y)) + y
        z = self.act2(self.conv2(z))  # this one may run in place
        return self.fc(z.mean(dim=(2, 3)))  # type: ignore[no-any-return]


class BranchyNet(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it (falls back to full forwards)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if float(x.mean()) > 10:  # never true; fx cannot know that
            x = -x
        return self.fc(x.mean(dim=(2, 3)))  # type: ignore[no-any-return]


def _model(module: nn.Module, name: str, classes: int) -> ConvModel:
    return ConvModel(
        name=name,
        module=module,
        preprocess=IDENTITY,
        source=WeightSource("random"),
        classes=tuple(f"c{i}" for i in range(classes)),
    )


def _images(n: int, size: int, seed: int = 0) -> Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---- meaning ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_region_model_is_nonzero_only_where_windows_meet_the_region(mode: str) -> None:
    model = _model(RegionNet(), "region", 2)
    image = torch.ones(1, 3, 32, 32)  # brighter than the gray patch: covering it lowers s
    window, stride = 4, 2
    maps = occlusion_map(
        model,
        image,
        [ClassTarget(0)],
        window=window,
        stride=stride,
        mode=mode,  # type: ignore[arg-type]
    )
    assert maps.shape == (1, 32, 32) and maps.dtype == torch.float32
    # The score reads the rectangle grown by the 3×3 box filter's 1 px halo.
    y0, y1, x0, x1 = RECT[0] - 1, RECT[1] + 1, RECT[2] - 1, RECT[3] + 1
    expected = torch.zeros(32, 32, dtype=torch.bool)
    for y, x in occ._positions(32, 32, window, stride):
        if y < y1 and y + window > y0 and x < x1 and x + window > x0:
            expected[y : y + window, x : x + window] = True
    assert bool((maps[0][~expected] == 0).all())
    assert bool((maps[0][RECT[0] : RECT[1], RECT[2] : RECT[3]] > 0).all())


def test_drop_is_averaged_over_covering_windows() -> None:
    model = _model(RegionNet(), "region", 2)
    image = torch.ones(1, 3, 32, 32)
    signed = occ._occlusion(model, image, [ClassTarget(0)], window=8, stride=8)
    # Windows tile the image: each pixel's value is its one window's drop.
    masked = image.clone()
    masked[..., 8:16, 8:16] = 0.5
    with torch.inference_mode():
        p0 = torch.softmax(model(model.preprocess.normalize(image)), 1)[0, 0]
        p = torch.softmax(model(masked), 1)[0, 0]
    assert float(signed[0, 8:16, 8:16].sub(float(p0 - p)).abs().max()) < 1e-6


# ---- exactness -------------------------------------------------------------------------------
def test_exact_mode_equals_the_loop_on_the_tiny_model(tiny: ConvModel) -> None:
    x = _images(2, 24)
    targets = [ClassTarget(0), ClassTarget(2)]
    ref = occ._occlusion_loop(tiny, x, targets, window=6, stride=3)
    signed = occ._occlusion(tiny, x, targets, window=6, stride=3, switch_fraction=1.0)
    assert float((signed - ref).abs().max()) <= 1e-5
    public = occlusion_map(tiny, x, targets, window=6, stride=3)
    assert float((public - ref.clamp(min=0)).abs().max()) <= 1e-5
    assert float(ref.abs().max()) > 1e-3  # the comparison is not vacuous


def test_the_tiny_model_plan_skips_work(tiny: ConvModel) -> None:
    traced = Traced.trace(tiny.module)
    assert traced is not None
    clean = _images(1, 24)
    positions = occ._positions(24, 24, 6, 3)
    with torch.inference_mode():
        plan = plan_mod.Plan.build(
            traced, clean, positions, (7, 7), 6, 1.0, torch.contiguous_format
        )
    kinds = [(s.node.name, s.kind) for s in plan.steps]
    assert kinds == [
        ("x", "input"),
        ("conv1", "window"),
        ("relu1", "pointwise"),
        ("pool1", "window"),
        ("conv2", "pointwise"),
        ("relu2", "pointwise"),
    ]
    assert [n.name for n in plan.live] == ["relu2"]
    # Each mask recomputes a crop, not the map: 6 + 2 px of the 24×24 conv1 map.
    assert plan.steps[1].size == (8, 8)


def test_a_wrong_plan_is_caught_and_replaced(
    tiny: ConvModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = plan_mod._influence

    def too_small(lo: int, hi: int, axis: tuple[int, int, int], n: int) -> tuple[int, int]:
        a, b = real(lo, hi, axis, n)
        return a + 1, b  # forgets the first affected unit

    monkeypatch.setattr(plan_mod, "_influence", too_small)
    traced = Traced.trace(tiny.module)
    assert traced is not None
    x = _images(1, 24, seed=8)
    positions = occ._positions(24, 24, 6, 3)
    with torch.inference_mode():
        plan = plan_mod.Plan.build(traced, x, positions, (7, 7), 6, 1.0, torch.contiguous_format)
    assert len(plan.steps) == 1  # whole forwards only
    ref = occ._occlusion_loop(tiny, x, [ClassTarget(1)], window=6, stride=3)
    got = occ._occlusion(tiny, x, [ClassTarget(1)], window=6, stride=3, switch_fraction=1.0)
    assert float((got - ref).abs().max()) <= 1e-5


def test_batched_equals_unbatched(tiny: ConvModel) -> None:
    x = _images(1, 20, seed=3)
    t = [ClassTarget(1)]
    one = occ._occlusion(tiny, x, t, window=5, stride=3, batch_size=1)
    seven = occ._occlusion(tiny, x, t, window=5, stride=3, batch_size=7)
    assert torch.equal(one, seven)


def test_global_ops_end_the_skipped_part_and_stay_exact() -> None:
    model = _model(GlobalNet(), "global", 5)
    x = _images(1, 24, seed=5)
    t = [ClassTarget(3)]
    ref = occ._occlusion_loop(model, x, t, window=6, stride=4)
    got = occ._occlusion(model, x, t, window=6, stride=4, switch_fraction=1.0)
    assert float((got - ref).abs().max()) <= 1e-5
    traced = Traced.trace(model.module)
    assert traced is not None
    positions = occ._positions(24, 24, 6, 4)
    with torch.inference_mode():
        plan = plan_mod.Plan.build(traced, x, positions, (6, 6), 6, 1.0, torch.contiguous_format)
    assert [s.node.name for s in plan.steps] == ["x", "conv1", "bn", "act"]


def test_many_layer_kinds_run_on_crops_and_stay_exact() -> None:
    model = _model(ZooNet(), "zoo", 4)
    x = _images(1, 40, seed=11)
    t = [ClassTarget(1)]
    ref = occ._occlusion_loop(model, x, t, window=6, stride=3)
    got = occ._occlusion(model, x, t, window=6, stride=3, switch_fraction=1.0)
    assert float((got - ref).abs().max()) <= 1e-5
    assert float(ref.abs().max()) > 1e-3
    traced = Traced.trace(model.module)
    assert traced is not None
    positions = occ._positions(40, 40, 6, 3)
    with torch.inference_mode():
        plan = plan_mod.Plan.build(traced, x, positions, (13, 13), 6, 1.0, torch.contiguous_format)
    assert plan.steps[-1].node.name == "cat"  # everything before the global pool
    assert len(plan.steps) == 14


def test_activations_run_in_place_only_on_unshared_fresh_tensors() -> None:
    model = _model(AliasNet(), "alias", 3)
    traced = Traced.trace(model.module)
    assert traced is not None
    by_name = {n.name: n for n in traced.nodes}
    assert plan_mod._in_place(traced, by_name["act"]) is None
    assert plan_mod._in_place(traced, by_name["act2"]) is not None
    x = _images(1, 20, seed=12)
    t = [ClassTarget(1)]
    ref = occ._occlusion_loop(model, x, t, window=4, stride=2)
    for fraction in (0.0, 1.0):  # whole forwards only, and crops up to the mean
        got = occ._occlusion(model, x, t, window=4, stride=2, switch_fraction=fraction)
        assert float((got - ref).abs().max()) <= 1e-5
    assert float(ref.abs().max()) > 1e-3


def test_untraceable_models_and_neuron_targets_use_full_forwards(tiny: ConvModel) -> None:
    model = _model(BranchyNet(), "branchy", 3)
    assert Traced.trace(model.module) is None
    x = _images(1, 16, seed=2)
    ref = occ._occlusion_loop(model, x, [ClassTarget(1)], window=4, stride=4)
    got = occ._occlusion(model, x, [ClassTarget(1)], window=4, stride=4)
    assert float((got - ref).abs().max()) <= 1e-5
    for neuron in ([NeuronTarget("relu2", 0, (3, 4))], [NeuronTarget("relu2", 0)]):
        ref = occ._occlusion_loop(tiny, _images(1, 16), neuron, window=4, stride=2)
        got = occ._occlusion(tiny, _images(1, 16), neuron, window=4, stride=2, batch_size=5)
        assert float((got - ref).abs().max()) <= 1e-5
        assert float(ref.abs().max()) > 1e-3


def test_a_neuron_without_position_is_scored_where_the_clean_image_peaks(
    tiny: ConvModel,
) -> None:
    x = _images(1, 16, seed=6)
    with torch.inference_mode():
        act = capture(tiny, x, ["relu2"])["relu2"]
    y, xx = divmod(int(act[0, 1].flatten().argmax()), int(act.shape[-1]))
    free = occ._occlusion(tiny, x, [NeuronTarget("relu2", 1)], window=4, stride=2)
    fixed = occ._occlusion(tiny, x, [NeuronTarget("relu2", 1, (y, xx))], window=4, stride=2)
    assert torch.equal(free, fixed)


def test_default_batch_sizes(tiny: ConvModel) -> None:
    events: list[Progress] = []
    occlusion_map(
        tiny, _images(1, 16), [ClassTarget(0)], window=4, stride=2, on_progress=events.append
    )
    assert [e.done for e in events] == [0, 32, 49]  # early work skipped: 32 masks per pass
    events.clear()
    occlusion_map(
        tiny,
        _images(1, 8),
        [NeuronTarget("relu2", 0)],
        window=4,
        stride=2,
        on_progress=events.append,
    )
    assert [e.done for e in events] == [0, 4, 8, 9]  # whole images: 4 per pass


@pytest.mark.weights
def test_exact_mode_equals_the_loop_on_efficientnet() -> None:
    from convscope.models.registry import load_model

    model = load_model("efficientnet_lite0")
    x = _images(1, 64, seed=7)
    t = [ClassTarget(int(model(model.preprocess.normalize(x)).argmax()))]
    ref = occ._occlusion_loop(model, x, t, window=16, stride=16)
    got = occ._occlusion(model, x, t, window=16, stride=16, batch_size=8)
    assert float((got - ref).abs().max()) <= 1e-5
    fast = occ._occlusion(model, x, t, window=16, stride=16, batch_size=8, mode="fast")
    assert float((fast - ref).abs().max()) <= FAST_TOLERANCE
    # The plan really skips work here: TF-SAME stem and blocks run on crops.
    traced = Traced.trace(model.module)
    assert traced is not None
    clean = model.preprocess.normalize(x)
    positions = occ._positions(64, 64, 16, 16)
    with torch.inference_mode():
        plan = plan_mod.Plan.build(
            traced, clean, positions, (4, 4), 16, 1.0, torch.contiguous_format
        )
    names = [s.node.name for s in plan.steps]
    assert names[:4] == ["x", "_conv_stem", "_bn0", "_act_stem"] and len(names) > 10


# ---- fast mode -------------------------------------------------------------------------------
def test_fast_mode_is_within_its_tolerance(tiny: ConvModel) -> None:
    model = _model(GlobalNet(), "global", 5)
    x = _images(1, 24, seed=9)
    t = [ClassTarget(2)]
    exact = occ._occlusion(model, x, t, window=6, stride=3)
    for dtype in ("auto", torch.bfloat16):
        fast = occ._occlusion(model, x, t, window=6, stride=3, mode="fast", fast_dtype=dtype)
        assert float((fast - exact).abs().max()) <= FAST_TOLERANCE
    fast = occlusion_map(tiny, _images(1, 16), [ClassTarget(0)], window=4, mode="fast")
    exact = occlusion_map(tiny, _images(1, 16), [ClassTarget(0)], window=4)
    assert float((fast - exact).abs().max()) <= FAST_TOLERANCE


@pytest.mark.weights
def test_fast_mode_in_bfloat16_on_efficientnet_is_within_its_tolerance() -> None:
    """bfloat16 forced, so that CPUs without native bf16 (where "auto" runs float32) check it
    too, in the setting `FAST_TOLERANCE` was measured in: random 64 px images (seeds 0–9, one
    image per call), window 16, stride 16, with the plan and with whole forwards."""
    from convscope.models.registry import load_model

    model = load_model("efficientnet_lite0")
    worst = {True: 0.0, False: 0.0}
    for seed in range(10):
        x = _images(1, 64, seed=seed)
        with torch.inference_mode():
            t = [ClassTarget(int(model(model.preprocess.normalize(x)).argmax()))]
        exact = occ._occlusion(model, x, t, window=16, stride=16)
        for incremental in (True, False):
            fast = occ._occlusion(
                model,
                x,
                t,
                window=16,
                stride=16,
                mode="fast",
                fast_dtype=torch.bfloat16,
                incremental=incremental,
            )
            err = float((fast - exact).abs().max())
            assert err <= FAST_TOLERANCE, (seed, incremental, err)
            worst[incremental] = max(worst[incremental], err)
    # bfloat16 really ran (float32 is within 1e-5 of exact).
    assert min(worst.values()) > 1e-2


def test_fast_mode_keeps_the_crops_and_the_classifier_in_float32() -> None:
    """With the plan only the whole maps between the crops and the pooled classifier run in
    reduced precision: the crops (and the clean maps they read) and the classifier do not."""
    model = _model(GlobalNet(), "global", 5)
    traced = Traced.trace(model.module)
    assert traced is not None
    x = _images(1, 24, seed=9)
    positions = occ._positions(24, 24, 6, 3)
    bf16 = occ._precision(torch.device("cpu"), torch.bfloat16)
    with torch.inference_mode():
        plan = plan_mod.Plan.build(traced, x, positions, (7, 7), 6, 1.0, torch.contiguous_format)
        runner = plan_mod.IncrementalRunner(
            plan, model, x, torch.zeros_like(x), ClassTarget(2), bf16
        )
        live = runner.live([0, 1, 2])
    prefix = [s.node for s in plan.steps]
    assert [n.name for n in prefix] == ["x", "conv1", "bn", "act"]
    assert all(runner.values[n].dtype == torch.float32 for n in prefix)
    assert live and all(v.dtype == torch.float32 for v in live.values())
    node = {n.name: n for n in traced.nodes}
    assert runner.values[node["conv2"]].dtype == torch.bfloat16
    assert {"pool", "fc"} <= {n.name for n in plan.tail}
    assert runner.values[node["fc"]].dtype == torch.float32


def _native_bf16(monkeypatch: pytest.MonkeyPatch, answer: bool | Exception) -> None:
    """Mock the CPU's bf16 capability as oneDNN reports it (an exception: the check fails)."""

    def supported() -> bool:
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", supported)
    monkeypatch.setattr(
        convscope.device, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"})
    )
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)


def test_fast_dtype_follows_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    _native_bf16(monkeypatch, True)
    assert occ._fast_dtype(cpu) is torch.bfloat16
    auto = occ._precision(cpu, "auto")()
    assert isinstance(auto, torch.autocast) and auto.fast_dtype is torch.bfloat16
    for failing in (False, RuntimeError("no oneDNN"), AttributeError("no such op")):
        _native_bf16(monkeypatch, failing)
        assert occ._fast_dtype(cpu) is None
        assert isinstance(occ._precision(cpu, "auto")(), contextlib.nullcontext)
    explicit = occ._precision(cpu, torch.bfloat16)()  # a forced dtype ignores the hardware
    assert isinstance(explicit, torch.autocast) and explicit.fast_dtype is torch.bfloat16
    assert isinstance(occ._precision(cpu, None)(), contextlib.nullcontext)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert occ._fast_dtype(cuda) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert occ._fast_dtype(cuda) is torch.float16
    assert occ._fast_dtype(torch.device("meta")) is None


def test_auto_fast_mode_follows_the_cpus_bf16(
    tiny: ConvModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without native bf16, "auto" fast mode is float32: the same maps as exact mode, with the
    plan and with whole forwards. With it, bfloat16 runs and stays within the tolerance."""
    model = _model(GlobalNet(), "global", 5)
    x = _images(1, 24, seed=9)
    t = [ClassTarget(2)]
    neuron = [NeuronTarget("relu2", 1)]  # whole forwards
    exact = occ._occlusion(model, x, t, window=6, stride=3)
    exact_neuron = occ._occlusion(tiny, _images(1, 16), neuron, window=4, stride=2)
    _native_bf16(monkeypatch, False)
    fast = occ._occlusion(model, x, t, window=6, stride=3, mode="fast")
    assert torch.equal(fast, exact)
    fast = occ._occlusion(tiny, _images(1, 16), neuron, window=4, stride=2, mode="fast")
    assert torch.equal(fast, exact_neuron)
    public = occlusion_map(model, x, t, window=6, stride=3, mode="fast")
    assert torch.equal(public, exact.clamp(min=0))
    _native_bf16(monkeypatch, True)
    fast = occ._occlusion(model, x, t, window=6, stride=3, mode="fast")
    assert 0 < float((fast - exact).abs().max()) <= FAST_TOLERANCE


def test_batchnorm_folding_is_exact_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both modes fold BN into the conv before it; exact mode still equals the loop. A neuron
    target at that conv (whose output folding changes) makes occlusion run unfolded."""
    model = _model(GlobalNet(), "global", 5)
    x = _images(1, 24, seed=3)
    folds: list[bool] = []
    real = occ._working_copy

    def spy(m: ConvModel, *, channels_last: bool, fold: bool = False) -> ConvModel:
        folds.append(fold)
        return real(m, channels_last=channels_last, fold=fold)

    monkeypatch.setattr(occ, "_working_copy", spy)
    t: list[ClassTarget | NeuronTarget] = [ClassTarget(3)]
    ref = occ._occlusion_loop(model, x, t, window=6, stride=3)
    got = occ._occlusion(model, x, t, window=6, stride=3)
    assert folds == [True]  # the folded copy scored the clean image as the model does
    assert float((got - ref).abs().max()) <= 1e-5 and float(ref.abs().max()) > 1e-3
    for layer in ("conv1", "bn"):
        folds.clear()
        t = [NeuronTarget(layer, 3, (4, 5))]
        ref = occ._occlusion_loop(model, x, t, window=6, stride=3)
        got = occ._occlusion(model, x, t, window=6, stride=3)
        # conv1's own output changes when bn is folded into it: checked, and run unfolded.
        assert folds == ([True, False] if layer == "conv1" else [True])
        assert float((got - ref).abs().max()) <= 1e-5 * max(1.0, float(ref.abs().max()))
        assert float(ref.abs().max()) > 1e-3


def test_folding_batchnorm_makes_a_private_copy() -> None:
    model = _model(GlobalNet(), "global", 5)
    before = state_copy(model.module)
    work = occ._working_copy(model, channels_last=True, fold=True)
    assert isinstance(work.module.bn, nn.Identity)  # type: ignore[union-attr]
    assert isinstance(model.module.bn, nn.BatchNorm2d)  # type: ignore[union-attr]
    assert same_state(before, state_copy(model.module))
    x = _images(2, 24)
    with torch.inference_mode():
        assert torch.allclose(work(x), model(x), atol=1e-5)


# ---- fills -----------------------------------------------------------------------------------
def test_fills() -> None:
    image = _images(1, 32, seed=4)
    gray = occ._fill_image(image, "gray", 8)
    assert torch.equal(gray, torch.full_like(image, 0.5))
    mean = occ._fill_image(image, "mean", 8)
    assert torch.allclose(mean[0, :, 5, 7], image[0].mean(dim=(1, 2)))
    assert torch.allclose(mean[0, :, 0, 0], mean[0, :, 31, 31])
    blur = occ._fill_image(image, "blur", 8)
    assert torch.allclose(blur, TF.gaussian_blur(image, [13, 13], [2.0, 2.0]))
    assert float(blur.std()) < float(image.std())


@pytest.mark.parametrize("fill", ["mean", "blur"])
def test_image_fills_hide_nothing_in_a_flat_image(tiny: ConvModel, fill: str) -> None:
    flat = torch.ones(1, 3, 16, 16) * torch.tensor([0.2, 0.7, 0.4]).view(1, 3, 1, 1)
    maps = occ._occlusion(tiny, flat, [ClassTarget(0)], window=4, stride=2, fill=fill)  # type: ignore[arg-type]
    assert float(maps.abs().max()) < 1e-6
    gray = occ._occlusion(tiny, flat, [ClassTarget(0)], window=4, stride=2, fill="gray")
    assert float(gray.abs().max()) > 1e-3


# ---- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"window": 17}, "window 17 is larger than the 16×16 image"),
        ({"window": 0}, "window must be at least 1"),
        ({"stride": 0}, "stride must be at least 1"),
        ({"fill": "noise"}, "Unknown fill 'noise'"),
        ({"mode": "quick"}, "Unknown occlusion mode 'quick'"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
    ],
)
def test_bad_options(tiny: ConvModel, options: dict[str, object], message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        occlusion_map(tiny, _images(1, 16), [ClassTarget(0)], **options)  # type: ignore[arg-type]


def test_bad_targets(tiny: ConvModel) -> None:
    with pytest.raises(UserInputError, match="got 2 targets for 1 images"):
        occlusion_map(tiny, _images(1, 16), [ClassTarget(0), ClassTarget(1)])
    with pytest.raises(UserInputError, match="out of range"):
        occlusion_map(tiny, _images(1, 16), [ClassTarget(5)], window=4)


# ---- side effects ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_no_side_effects(tiny: ConvModel, mode: str) -> None:
    x = _images(2, 16)
    x_before = x.clone()
    state = state_copy(tiny.module)
    events: list[Progress] = []
    occlusion_map(
        tiny,
        x,
        [ClassTarget(0), NeuronTarget("relu2", 1)],
        window=4,
        stride=4,
        batch_size=5,
        mode=mode,  # type: ignore[arg-type]
        on_progress=events.append,
    )
    assert torch.equal(x, x_before)
    assert all_hooks(tiny.module) == 0 and same_state(state, state_copy(tiny.module))
    assert all(p.is_contiguous() for p in tiny.module.parameters())  # not left channels-last
    assert not tiny.module.training
    # 16 windows per image, 5 per batch: 4 batches per image, plus the start event.
    assert [e.done for e in events] == [0, 5, 10, 15, 16, 21, 26, 31, 32]
    assert all(e.total == 32 and e.task == "occlusion" and e.unit == "masks" for e in events)
    with pytest.raises(UserInputError):
        occlusion_map(tiny, x, [ClassTarget(0), ClassTarget(9)], window=4, mode=mode)  # type: ignore[arg-type]
    with pytest.raises(UserInputError):
        occlusion_map(tiny, x, [ClassTarget(0), NeuronTarget("nope", 0)], window=4, mode=mode)  # type: ignore[arg-type]
    assert all_hooks(tiny.module) == 0 and same_state(state, state_copy(tiny.module))
    assert torch.equal(x, x_before)
