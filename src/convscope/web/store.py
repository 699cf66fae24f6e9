"""What a server keeps while it runs: uploaded images and results, by random id, in one
per-server temporary directory that is removed on exit.

Nothing from a request names a file: an upload is written under a fresh id and decoded as an
image only (with the CLI's size and decompression-bomb guards); a result is found by its id,
which must look like one of ours before any lookup.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from torch import Tensor

from convscope.data.images import load_image, save_png
from convscope.errors import UserInputError
from convscope.web.jobs import new_id

__all__ = ["ID_PATTERN", "MAX_SIDE", "Result", "Store", "StoredImage"]

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{22}$")
"""What `new_id` makes; anything else is refused before any lookup."""

MAX_SIDE = 1024
"""Uploads are kept with their longer side at most this (the pages work on small images)."""


@dataclass(frozen=True)
class StoredImage:
    id: str
    label: str
    image: Tensor  # (3, H, W) float32 in [0, 1]


@dataclass(frozen=True)
class Result:
    id: str
    path: Path
    filename: str  # the download's name
    meta: dict[str, Any] = field(default_factory=dict)


def _shrink(image: Tensor) -> Tensor:
    """(3, H, W) with its longer side at most `MAX_SIDE`."""
    from convscope.synthesize.octaves import resize

    h, w = int(image.shape[-2]), int(image.shape[-1])
    if max(h, w) <= MAX_SIDE:
        return image
    scale = MAX_SIDE / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return resize(image[None], size)[0].clamp(0, 1)


class Store:
    """Uploads and results of one server."""

    def __init__(self, *, max_pixels: int | None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="convscope-serve-"))
        self.max_pixels = max_pixels
        self._images: dict[str, StoredImage] = {}
        self._results: dict[str, Result] = {}
        self._lock = threading.Lock()

    def add_upload(self, data: bytes, *, label: str) -> StoredImage:
        """Decode `data` as an image (one sentence otherwise) and keep it."""
        image_id = new_id()
        path = self.root / f"upload-{image_id}"
        path.write_bytes(data)
        try:
            image = load_image(path, max_pixels=self.max_pixels)
        except UserInputError as exc:
            raise UserInputError(str(exc).replace(str(path), "the uploaded file")) from None
        finally:
            path.unlink(missing_ok=True)
        return self.add_image(image, label=label, image_id=image_id)

    def add_image(self, image: Tensor, *, label: str, image_id: str | None = None) -> StoredImage:
        stored = StoredImage(image_id or new_id(), label, _shrink(image.detach().float().cpu()))
        with self._lock:
            self._images[stored.id] = stored
        return stored

    def image(self, image_id: str) -> StoredImage | None:
        if not ID_PATTERN.match(image_id):
            return None
        with self._lock:
            return self._images.get(image_id)

    def add_result(
        self, image: Tensor | Image.Image, *, name: str, meta: dict[str, Any] | None = None
    ) -> Result:
        """Keep a result PNG with its recipe (the PNG text chunk "convscope", as the CLI's)."""
        result_id = new_id()
        path = self.root / f"result-{result_id}.png"
        meta = dict(meta or {})
        text = {"convscope": json.dumps(meta, sort_keys=True, default=str)} if meta else None
        save_png(image, path, text=text)
        result = Result(result_id, path, f"{name}.png", meta)
        with self._lock:
            self._results[result_id] = result
        return result

    def result(self, result_id: str) -> Result | None:
        if not ID_PATTERN.match(result_id):
            return None
        with self._lock:
            return self._results.get(result_id)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
