"""Feature extraction: shapes and provenance, streaming to disk, resume, skipped files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from convscope.data.datasets import ArrayDataset, ImageFolder
from convscope.data.stream import StreamedTensor, write_safetensors
from convscope.errors import UserInputError
from convscope.events import Progress
from convscope.inspect import features as feat_mod
from convscope.inspect.features import (
    FORMAT,
    Pooling,
    extract_features,
    image_features,
    load_features,
    partial_path,
)
from convscope.models import ConvModel
from convscope.probe import capture


def toy_dataset(n: int = 40, size: int = 8, seed: int = 0) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size)).astype(np.uint8)
    labels = rng.integers(0, 3, n)
    return ArrayDataset("toy", images, labels, ["a", "b", "c"], scale=255.0)


def test_shapes_values_and_provenance(tiny: ConvModel, tmp_path: Path) -> None:
    ds = toy_dataset()
    ff = extract_features(tiny, ds, "act", out=tmp_path / "f.safetensors", batch_size=7)
    assert ff.features.shape == (40, 2) and ff.features.dtype == torch.float32
    assert ff.indices.tolist() == list(range(40))
    assert ff.labels.tolist() == ds.labels.tolist()  # type: ignore[union-attr]
    # Same numbers as running the probe by hand on the whole batch, then pooling.
    x = tiny.prepare(torch.stack([ds[i].image for i in range(40)]))
    expected = capture(tiny, x, ["act"])["act"].mean(dim=(2, 3))
    torch.testing.assert_close(ff.features, expected)
    p = ff.provenance
    assert p["format"] == FORMAT
    assert (p["model"], p["layer"], p["layer_dotted"], p["pool"]) == ("tiny", "act", "relu2", "avg")
    assert p["precision"] == "fp32" and p["dataset"] == "toy" and p["skipped"] == "0"
    assert "hand-set" in p["weights"] and p["convscope_version"]
    assert ff.idents == [f"toy/{i}" for i in range(40)]
    assert ff.classes == ["a", "b", "c"] and len(ff.label_names()) == 40
    assert not partial_path(tmp_path / "f.safetensors").exists()
    with safe_open(str(tmp_path / "f.safetensors"), framework="pt") as f:
        assert set(f.keys()) == {"features", "indices", "labels"}
        assert f.metadata()["layer"] == "act"


@pytest.mark.parametrize(("pool", "dim"), [("avg", 4), ("max", 4), ("flatten", 4 * 8 * 8)])
def test_pooling(tiny: ConvModel, tmp_path: Path, pool: str, dim: int) -> None:
    ds = toy_dataset(6)
    ff = extract_features(tiny, ds, "conv1", out=tmp_path / "f.safetensors", pool=pool)  # type: ignore[arg-type]
    assert ff.features.shape == (6, dim)
    act = capture(tiny, tiny.prepare(ds[2].image), ["conv1"])["conv1"][0]  # (4, 8, 8)
    want = {"avg": act.mean(dim=(1, 2)), "max": act.amax(dim=(1, 2)), "flatten": act.flatten()}
    torch.testing.assert_close(ff.features[2], want[pool])
    torch.testing.assert_close(image_features(tiny, ds[2].image, "conv1", pool=pool)[0], want[pool])  # type: ignore[arg-type]


@pytest.mark.parametrize("pool", ["avg", "flatten"])
def test_bf16_precision_is_close_to_fp32(tiny: ConvModel, tmp_path: Path, pool: Pooling) -> None:
    """precision="bf16" runs bfloat16 autocast on every CPU (emulated where not native). It
    keeps 8 significant bits (each rounding within 2^-8 ≈ 0.4 % relative); tiny's features
    (at most ~2) are a few roundings deep: measured within 0.0084 abs, 0.8 % relative."""
    ds = toy_dataset()
    exact = extract_features(tiny, ds, "act", out=tmp_path / "a.safetensors", pool=pool)
    out = tmp_path / "b.safetensors"
    fast = extract_features(tiny, ds, "act", out=out, pool=pool, precision="bf16")
    assert fast.features.dtype == torch.float32 and fast.provenance["precision"] == "bf16"
    assert not torch.equal(fast.features, exact.features)  # bfloat16 really ran
    torch.testing.assert_close(fast.features, exact.features, rtol=2e-2, atol=1e-2)
    images = [ds[i].image for i in range(len(ds))]
    one = image_features(tiny, images, "act", pool=pool, precision="bf16")
    assert not torch.equal(one, exact.features)
    torch.testing.assert_close(one, exact.features, rtol=2e-2, atol=1e-2)


def _interrupt_after(batches: int) -> object:
    """A progress callback that presses Ctrl-C after `batches` batches (the first event comes
    before any batch)."""
    seen: list[int] = []

    def on_progress(event: Progress) -> None:
        seen.append(event.done)
        if len(seen) == batches + 1:
            raise KeyboardInterrupt

    return on_progress


def test_resume_is_bit_identical(tiny: ConvModel, tmp_path: Path) -> None:
    ds = toy_dataset(50)
    clean = extract_features(tiny, ds, "conv1", out=tmp_path / "clean.safetensors", batch_size=4)
    out = tmp_path / "resumed.safetensors"
    for stop in (3, 2):  # two interruptions: the partial state keeps two chunks
        with pytest.raises(KeyboardInterrupt):
            extract_features(
                tiny,
                ds,
                "conv1",
                out=out,
                batch_size=4,
                resume=True,
                on_progress=_interrupt_after(stop),  # type: ignore[arg-type]
            )
        assert not out.exists()
    state = json.loads((partial_path(out) / "state.json").read_text())
    assert state["position"] == 20 and state["rows"] == 20 and len(state["chunks"]) == 2
    resumed = extract_features(tiny, ds, "conv1", out=out, batch_size=4, resume=True)
    assert torch.equal(resumed.features, clean.features)
    assert torch.equal(resumed.indices, clean.indices)
    assert torch.equal(resumed.labels, clean.labels)
    assert resumed.provenance == clean.provenance
    assert not partial_path(out).exists()


def test_resume_refuses_other_settings(tiny: ConvModel, tmp_path: Path) -> None:
    ds = toy_dataset(30)
    out = tmp_path / "f.safetensors"
    with pytest.raises(KeyboardInterrupt):
        extract_features(tiny, ds, "conv1", out=out, batch_size=4, on_progress=_interrupt_after(2))  # type: ignore[arg-type]
    for kwargs, word in (({"layer": "conv2"}, "layer"), ({"pool": "max"}, "pool")):
        layer = str(kwargs.pop("layer", "conv1"))
        with pytest.raises(UserInputError, match=word) as info:
            extract_features(tiny, ds, layer, out=out, resume=True, **kwargs)  # type: ignore[arg-type]
        assert len(str(info.value).splitlines()) == 1
    with pytest.raises(UserInputError, match="--resume"):  # a partial run is never dropped silently
        extract_features(tiny, ds, "conv1", out=out)
    ff = extract_features(tiny, ds, "conv1", out=out, resume=True)
    assert len(ff) == 30


def test_features_stream_in_chunks(
    tiny: ConvModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feat_mod, "_CHUNK_FLOATS", 1)  # a chunk file every 256 rows
    out = tmp_path / "f.safetensors"
    chunks_seen: list[int] = []

    def on_progress(_: Progress) -> None:
        chunks_seen.append(len(list(partial_path(out).glob("chunk-*"))))

    ff = extract_features(
        tiny, toy_dataset(600), "act", out=out, batch_size=64, on_progress=on_progress
    )
    assert len(ff) == 600 and max(chunks_seen) == 2  # 512 rows on disk before the end
    assert isinstance(ff.features.numpy(), np.ndarray)


def test_streaming_writer_matches_save_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(37, 5)).astype(np.float32)
    idx = np.arange(37, dtype=np.int64)
    meta = {"format": "x", "note": "ünïcode"}
    write_safetensors(
        tmp_path / "stream.safetensors",
        [
            StreamedTensor("indices", np.dtype(np.int64), (37,), lambda: [idx[:10], idx[10:]]),
            StreamedTensor(
                "features",
                np.dtype(np.float32),
                (37, 5),
                lambda: (feats[i : i + 8] for i in range(0, 37, 8)),
            ),
        ],
        meta,
    )
    save_file(
        {"features": torch.from_numpy(feats), "indices": torch.from_numpy(idx)},
        str(tmp_path / "ref.safetensors"),
        metadata=meta,
    )
    ours, ref = load_file(tmp_path / "stream.safetensors"), load_file(tmp_path / "ref.safetensors")
    assert ours.keys() == ref.keys()
    for k in ref:
        assert ours[k].dtype == ref[k].dtype and torch.equal(ours[k], ref[k])
    with safe_open(str(tmp_path / "stream.safetensors"), framework="np") as f:
        assert f.metadata() == meta
    header_len = struct.unpack("<Q", (tmp_path / "stream.safetensors").read_bytes()[:8])[0]
    assert (8 + header_len) % 8 == 0  # data is 8-byte aligned
    with pytest.raises(RuntimeError, match="bytes"):  # chunks that do not fill the shape
        write_safetensors(
            tmp_path / "bad.safetensors",
            [StreamedTensor("x", np.dtype(np.float32), (4,), lambda: [np.zeros(3, np.float32)])],
            {},
        )
    assert not (tmp_path / "bad.safetensors").exists()


def _folder(root: Path) -> Path:
    for cls, color in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), color).save(root / cls / f"{i}.png")
    (root / "red" / "broken.png").write_bytes(b"not a png at all")
    (root / "blue" / "empty.jpg").write_bytes(b"")
    return root


def test_unreadable_files_are_skipped_and_counted(tiny: ConvModel, tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs")
    ff = extract_features(tiny, root, "act", out=tmp_path / "f.safetensors", batch_size=2)
    assert len(ff) == 6 and ff.skipped == 2
    skipped = json.loads(ff.provenance["skipped_idents"])
    assert sorted(Path(s).name for s in skipped) == ["broken.png", "empty.jpg"]
    assert ff.classes == ["blue", "red"]
    assert sorted(ff.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert all(Path(i).is_file() for i in ff.idents)
    assert ff.provenance["dataset"] == str(root.resolve())
    # red images give (r + g) = 1 at relu2 channel 0, blue ones 0 (away from the border)
    red = [r for r, i in enumerate(ff.idents) if "/red/" in i]
    assert all(ff.features[r, 0] > 0.5 for r in red)


def test_empty_or_unreadable_folder(tiny: ConvModel, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="no image files"):
        extract_features(tiny, tmp_path / "empty", "act", out=tmp_path / "f.safetensors")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"junk")
    with pytest.raises(UserInputError, match="None of the 1 images"):
        extract_features(tiny, ImageFolder(bad), "act", out=tmp_path / "f.safetensors")
    assert not (tmp_path / "f.safetensors").exists()
    assert not partial_path(tmp_path / "f.safetensors").exists()


def test_bad_arguments(tiny: ConvModel, tmp_path: Path) -> None:
    ds = toy_dataset(4)
    with pytest.raises(UserInputError, match="pool"):
        extract_features(tiny, ds, "act", out=tmp_path / "f.safetensors", pool="mean")  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match=r"\.safetensors"):
        extract_features(tiny, ds, "act", out=tmp_path / "f.npz")
    with pytest.raises(UserInputError, match="layer"):
        extract_features(tiny, ds, "nope", out=tmp_path / "f.safetensors")


def test_load_features_errors(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        load_features(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 3)
    with pytest.raises(UserInputError, match="not a safetensors"):
        load_features(junk)
    junk.write_bytes(struct.pack("<Q", 4) + b"nope")
    with pytest.raises(UserInputError, match="not a safetensors"):
        load_features(junk)
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(UserInputError, match="not a convscope feature file"):
        load_features(other)


def test_truncated_feature_file(tiny: ConvModel, tmp_path: Path) -> None:
    out = tmp_path / "f.safetensors"
    extract_features(tiny, toy_dataset(10), "act", out=out)
    data = out.read_bytes()
    out.write_bytes(data[:-12])
    with pytest.raises(UserInputError, match="damaged"):
        load_features(out)


class _Clock:
    """A stand-in for the `time` module whose every reading is 10 s after the one before."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 10.0
        return self.now


@pytest.mark.parametrize(
    ("seconds", "committed"),
    [(15.0, [0, 0, 8, 8, 16, 16, 24]), (1e9, [0, 0, 0, 0, 0, 0, 0])],
)
def test_checkpoint_by_time(
    tiny: ConvModel,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    seconds: float,
    committed: list[int],
) -> None:
    """Far below the ~16 MB chunk size, finished batches are still committed once
    `checkpoint_seconds` have passed since the last commit (20 s per 2 batches here)."""
    monkeypatch.setattr(feat_mod, "time", _Clock())
    out = tmp_path / "f.safetensors"
    seen: list[int] = []

    def on_progress(_: Progress) -> None:
        seen.append(json.loads((partial_path(out) / "state.json").read_text())["position"])

    ff = extract_features(
        tiny, toy_dataset(24), "act", out=out, batch_size=4, checkpoint_seconds=seconds,
        on_progress=on_progress,
    )  # fmt: skip
    assert seen == committed  # what the state held at each event: the start, then 6 batches
    assert len(ff) == 24


def test_checkpoint_seconds_and_shard_checks(tiny: ConvModel, tmp_path: Path) -> None:
    out = tmp_path / "f.safetensors"
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(UserInputError, match="checkpoint_seconds") as info:
            extract_features(tiny, toy_dataset(4), "act", out=out, checkpoint_seconds=bad)
        assert len(str(info.value).splitlines()) == 1
    with pytest.raises(UserInputError, match="rank"):
        extract_features(tiny, toy_dataset(4), "act", out=out, rank=2, world=2)
    with pytest.raises(UserInputError, match="torchrun"):  # no process group here
        extract_features(tiny, toy_dataset(4), "act", out=out, rank=1, world=2)
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("world", [2, 3, 7])
def test_rank_shares_merge_into_dataset_order(tmp_path: Path, world: int) -> None:
    """Each rank's share (every `world`-th block of 4) in chunks that cut blocks anywhere;
    with 7 ranks and 6 blocks one rank has nothing."""
    from convscope.data.stream import ChunkLog

    order = list(range(23))
    feats = np.arange(23 * 3, dtype=np.float32).reshape(23, 3)
    runs = []
    for r in range(world):
        share = feat_mod._shard(order, 4, r, world)
        log = ChunkLog.open(tmp_path / f"r{r}", {}, resume=False, out=tmp_path / "o")
        for lo in range(0, len(share), 5):
            ids = np.asarray(share[lo : lo + 5], dtype=np.int64)
            log.commit({"indices": ids, "features": feats[ids]}, position=lo + len(ids))
        runs.append(feat_mod._FeatureRun(log))
    assert sorted(i for r in range(world) for i in feat_mod._shard(order, 4, r, world)) == order
    got_idx = np.concatenate(list(feat_mod._merged(runs, "indices", rows=3)))
    got = np.concatenate(list(feat_mod._merged(runs, "features", rows=3)))
    assert got_idx.tolist() == order
    assert np.array_equal(got, feats)


def test_refuses_to_start_beside_an_interrupted_torchrun_run(
    tiny: ConvModel, tmp_path: Path
) -> None:
    out = tmp_path / "f.safetensors"
    partial_path(out, rank=1, world=2).mkdir()  # what `torchrun ... features` left
    for resume in (False, True):
        with pytest.raises(UserInputError, match="torchrun"):
            extract_features(tiny, toy_dataset(4), "act", out=out, resume=resume)
    assert not partial_path(out).exists()
