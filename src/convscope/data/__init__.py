"""Images, sample pictures and small datasets: loading, saving and atomic file writes.

Names are imported on first use (so the command line starts without torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from convscope._lazy import lazy_exports

if TYPE_CHECKING:
    from convscope.data.datasets import (
        FASHION_MNIST_CLASSES,
        FASHION_MNIST_DIR,
        ArrayDataset,
        FashionMNIST,
        ImageDataset,
        ImageFolder,
        Item,
        Skipped,
        dataset_names,
        digits,
        good_items,
        iter_items,
        load_dataset,
        mnist5k,
        read_idx,
    )
    from convscope.data.files import atomic_path, atomic_write_bytes, atomic_write_text
    from convscope.data.images import (
        DEFAULT_MAX_PIXELS,
        IMAGE_SUFFIXES,
        from_pil,
        load_image,
        png_text,
        save_image,
        save_png,
        save_pngs,
        to_pil,
    )
    from convscope.data.samples import (
        SAMPLES,
        SampleInfo,
        is_sample,
        load_image_or_sample,
        load_sample,
        sample_info,
        sample_names,
    )

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "IMAGE_SUFFIXES",
    "SAMPLES",
    "ArrayDataset",
    "FashionMNIST",
    "ImageDataset",
    "ImageFolder",
    "Item",
    "SampleInfo",
    "Skipped",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "dataset_names",
    "digits",
    "from_pil",
    "good_items",
    "is_sample",
    "iter_items",
    "load_dataset",
    "load_image",
    "load_image_or_sample",
    "load_sample",
    "mnist5k",
    "png_text",
    "read_idx",
    "sample_info",
    "sample_names",
    "save_image",
    "save_png",
    "save_pngs",
    "to_pil",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {
        "ArrayDataset": "convscope.data.datasets",
        "DEFAULT_MAX_PIXELS": "convscope.data.images",
        "FASHION_MNIST_CLASSES": "convscope.data.datasets",
        "FASHION_MNIST_DIR": "convscope.data.datasets",
        "FashionMNIST": "convscope.data.datasets",
        "IMAGE_SUFFIXES": "convscope.data.images",
        "ImageDataset": "convscope.data.datasets",
        "ImageFolder": "convscope.data.datasets",
        "Item": "convscope.data.datasets",
        "SAMPLES": "convscope.data.samples",
        "SampleInfo": "convscope.data.samples",
        "Skipped": "convscope.data.datasets",
        "atomic_path": "convscope.data.files",
        "atomic_write_bytes": "convscope.data.files",
        "atomic_write_text": "convscope.data.files",
        "dataset_names": "convscope.data.datasets",
        "digits": "convscope.data.datasets",
        "from_pil": "convscope.data.images",
        "good_items": "convscope.data.datasets",
        "is_sample": "convscope.data.samples",
        "iter_items": "convscope.data.datasets",
        "load_dataset": "convscope.data.datasets",
        "load_image": "convscope.data.images",
        "load_image_or_sample": "convscope.data.samples",
        "load_sample": "convscope.data.samples",
        "mnist5k": "convscope.data.datasets",
        "read_idx": "convscope.data.datasets",
        "sample_info": "convscope.data.samples",
        "sample_names": "convscope.data.samples",
        "save_image": "convscope.data.images",
        "png_text": "convscope.data.images",
        "save_png": "convscope.data.images",
        "save_pngs": "convscope.data.images",
        "to_pil": "convscope.data.images",
    },
)
