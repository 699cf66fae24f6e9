"""The streaming top-k scan against brute force; ties, resume, merging, bad inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from convscope.data.datasets import Item
from convscope.errors import UserInputError
from convscope.events import Progress
from convscope.inspect.scan import TopK, merge_topk, scan_top_activations
from convscope.models import ConvModel
from convscope.probe import capture
from convscope.testing import all_hooks, same_state, state_copy, tiny_model


class Images:
    """An in-memory RGB dataset."""

    def __init__(self, images: Tensor, name: str = "mem") -> None:
        self.images = images  # (N, 3, H, W)
        self.name = name
        self.classes = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> Item:
        return Item(self.images[i], None, self.ident(i))

    def ident(self, i: int) -> str:
        return f"{self.name}/{i}"


def brute_force(model: ConvModel, data: Images, layer: str, k: int) -> TopK:
    acts = capture(model, model.preprocess(data.images), [layer])[layer]  # (N, C, H, W)
    n, c, h, w = acts.shape
    flat = acts.reshape(n, c, h * w)
    rows = []
    for ch in range(c):
        cands = []
        for i in range(n):
            v = flat[i, ch]
            p = int((v == v.max()).nonzero()[0])  # first max, row-major
            cands.append((-float(v.max()), i, p // w, p % w))
        cands.sort()
        rows.append(cands[:k])
    return TopK(
        torch.tensor([[-r[0] for r in row] for row in rows]),
        torch.tensor([[r[1] for r in row] for row in rows]),
        torch.tensor([[r[2] for r in row] for row in rows]),
        torch.tensor([[r[3] for r in row] for row in rows]),
        n,
    )


def assert_same(a: TopK, b: TopK) -> None:
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.ys, b.ys) and torch.equal(a.xs, b.xs)
    assert torch.allclose(a.values, b.values, atol=1e-6)
    assert a.seen == b.seen


@pytest.fixture
def data() -> Images:
    g = torch.Generator().manual_seed(0)
    return Images(torch.rand(23, 3, 12, 12, generator=g))


@pytest.mark.parametrize("layer", ["conv1", "relu1", "pool1", "act"])
@pytest.mark.parametrize("batch_size", [1, 4, 7])
def test_scan_equals_brute_force(data: Images, layer: str, batch_size: int) -> None:
    model = tiny_model()
    before = state_copy(model.module)
    got = scan_top_activations(model, data, layer, k=5, batch_size=batch_size)
    assert_same(got, brute_force(model, data, layer, 5))
    assert all_hooks(model.module) == 0
    assert same_state(before, state_copy(model.module))


def test_ties_break_by_lower_index() -> None:
    img = torch.rand(3, 10, 10, generator=torch.Generator().manual_seed(1))
    data = Images(torch.stack([img] * 6))  # six identical images
    got = scan_top_activations(tiny_model(), data, "conv1", k=4, batch_size=4)
    assert got.images.tolist() == [[0, 1, 2, 3]] * 4


def test_resume_after_interruption_equals_a_clean_run(data: Images, tmp_path: Path) -> None:
    model = tiny_model()
    clean = scan_top_activations(model, data, "relu1", k=3, batch_size=2)
    state = tmp_path / "scan.safetensors"
    calls = {"n": 0}

    def interrupt(event: Progress) -> None:
        calls["n"] += 1
        if calls["n"] == 5:  # after 4 batches
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        scan_top_activations(
            model, data, "relu1", k=3, batch_size=2, state=state, on_progress=interrupt
        )
    assert state.exists()
    events: list[Progress] = []
    resumed = scan_top_activations(
        model, data, "relu1", k=3, batch_size=2, state=state, resume=True,
        on_progress=events.append,
    )  # fmt: skip
    assert events[0].done == 8  # continued after the 4 finished batches
    assert_same(resumed, clean)


def test_resume_refuses_another_scans_state(data: Images, tmp_path: Path) -> None:
    state = tmp_path / "scan.safetensors"
    scan_top_activations(tiny_model(), data, "relu1", k=3, state=state)
    with pytest.raises(UserInputError, match="different scan"):
        scan_top_activations(tiny_model(), data, "conv2", k=3, state=state, resume=True)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    cut=st.integers(1, 9),
    k=st.integers(1, 6),
)
def test_merge_is_exact_and_order_free(seed: int, cut: int, k: int) -> None:
    g = torch.Generator().manual_seed(seed)
    c, n = 3, 10
    values = torch.randint(0, 4, (c, n), generator=g).float()  # many ties
    images = torch.arange(n).repeat(c, 1)
    ys = torch.randint(0, 5, (c, n), generator=g)
    xs = torch.randint(0, 5, (c, n), generator=g)
    full = merge_topk([TopK(values, images, ys, xs, n)], k)

    def part(sl: slice) -> TopK:
        return merge_topk([TopK(values[:, sl], images[:, sl], ys[:, sl], xs[:, sl])], k)

    a, b = part(slice(0, cut)), part(slice(cut, n))
    for merged in (merge_topk([a, b], k), merge_topk([b, a], k)):
        assert torch.equal(merged.images, full.images)
        assert torch.equal(merged.values, full.values)


def test_bad_inputs(data: Images) -> None:
    with pytest.raises(UserInputError, match="larger than the dataset"):
        scan_top_activations(tiny_model(), data, "conv1", k=24)
    with pytest.raises(UserInputError, match="at least 1"):
        scan_top_activations(tiny_model(), data, "conv1", k=0)
    with pytest.raises(UserInputError, match="spatial"):
        scan_top_activations(tiny_model(), data, "fc", k=2)
    with pytest.raises(UserInputError, match="no images"):
        scan_top_activations(tiny_model(), Images(torch.zeros(0, 3, 4, 4)), "conv1", k=1)


def test_bf16_mode_runs_and_is_close(data: Images) -> None:
    model = tiny_model()
    exact = scan_top_activations(model, data, "relu1", k=3)
    fast = scan_top_activations(model, data, "relu1", k=3, precision="bf16")
    assert torch.allclose(fast.values, exact.values, rtol=2e-2, atol=1e-2)


class _Clock:
    """A stand-in for the `time` module whose every reading is 10 s after the one before."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 10.0
        return self.now


def test_checkpoint_by_time(data: Images, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Besides every `checkpoint_every` batches, the state is saved once `checkpoint_seconds`
    have passed since the last save (20 s per 2 batches here), and at the end."""
    from convscope.inspect import scan as scan_mod

    real = scan_mod._save_state
    saved: list[int] = []

    def record(path: Path, top: TopK, position: int, config: scan_mod.ScanConfig) -> None:
        saved.append(position)
        real(path, top, position, config)

    monkeypatch.setattr(scan_mod, "time", _Clock())
    monkeypatch.setattr(scan_mod, "_save_state", record)
    state = tmp_path / "scan.safetensors"
    got = scan_top_activations(
        tiny_model(), data, "relu1", k=3, batch_size=2, state=state, checkpoint_every=1000,
        checkpoint_seconds=15.0,
    )  # fmt: skip
    assert saved == [4, 8, 12, 16, 20, 23, 23]
    assert_same(got, scan_top_activations(tiny_model(), data, "relu1", k=3, batch_size=2))
    for bad in (0.0, -2.0, float("inf"), float("nan")):
        with pytest.raises(UserInputError, match="checkpoint_seconds"):
            scan_top_activations(tiny_model(), data, "relu1", k=3, checkpoint_seconds=bad)
