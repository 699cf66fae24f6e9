"""safetensors files written as a stream, and resumable runs that build them chunk by chunk.

- `write_safetensors` writes a file whose tensors are produced piece by piece (so a file far
  larger than memory can be written), atomically. Its header is deterministic: tensors in the
  order given, metadata keys sorted, so the same content gives the same bytes.
- `save_tensors` is the plain case: a mapping of tensors or arrays, written the same way.
- `read_safetensors_header` reads and checks a file's header without loading any data.
- `ChunkLog` is a folder of chunk files plus a small JSON state that is always consistent (a
  chunk is written before the state that names it), so a long run killed at any moment can
  continue where its last commit left off.

Nothing here unpickles anything: safetensors holds raw little-endian numbers and a JSON header.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from convscope.data.files import atomic_path, atomic_write_text
from convscope.errors import UserInputError

__all__ = [
    "MAX_HEADER",
    "NUMPY_DTYPES",
    "SAFETENSORS_DTYPES",
    "ChunkLog",
    "StreamedTensor",
    "read_safetensors_header",
    "save_tensors",
    "write_safetensors",
]

MAX_HEADER = 100_000_000  # what the safetensors library itself accepts

SAFETENSORS_DTYPES: dict[str, str] = {
    "float32": "F32",
    "float64": "F64",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
}
"""numpy (or torch) dtype name → safetensors dtype."""

NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    v: np.dtype(k) for k, v in SAFETENSORS_DTYPES.items() if k != "bfloat16"
}
"""safetensors dtype → numpy dtype (bfloat16 has none)."""


@dataclass(frozen=True)
class StreamedTensor:
    """A tensor to write without holding it: its dtype and shape, and a function that yields
    its contents as C-ordered arrays whose bytes, concatenated, are the tensor's."""

    name: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    chunks: Callable[[], Iterable[NDArray[Any]]]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def _header(
    entries: Sequence[tuple[str, str, tuple[int, ...], int]], metadata: Mapping[str, str]
) -> bytes:
    """The header bytes (length prefix included) for (name, safetensors dtype, shape, nbytes)
    entries in file order, padded so the data starts 8-byte aligned."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(metadata[k]) for k in sorted(metadata)}
    offset = 0
    for name, dtype, shape, nbytes in entries:
        if name == "__metadata__" or name in header:
            raise UserInputError(f"tensor name {name!r} is reserved or repeated.")
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-(8 + len(raw)) % 8)
    return struct.pack("<Q", len(raw)) + raw


def write_safetensors(
    path: str | Path, tensors: Sequence[StreamedTensor], metadata: Mapping[str, str]
) -> Path:
    """Write a safetensors file chunk by chunk, atomically (temp file + rename).

    The layout is the format's own: an 8-byte little-endian header length, a JSON header
    (dtype, shape and data_offsets of each tensor, and `__metadata__` with sorted keys; padded
    with spaces so the data starts 8-byte aligned), then the raw little-endian bytes in the
    given order.
    """
    entries = []
    for t in tensors:
        key = np.dtype(t.dtype).name
        if key not in SAFETENSORS_DTYPES:
            raise UserInputError(f"dtype {key} cannot be written to a safetensors file here.")
        entries.append((t.name, SAFETENSORS_DTYPES[key], tuple(t.shape), t.nbytes))
    head = _header(entries, metadata)
    target = Path(path)
    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        f.write(head)
        for t in tensors:
            written = 0
            for chunk in t.chunks():
                arr = np.ascontiguousarray(chunk, dtype=t.dtype.newbyteorder("<"))
                f.write(arr.reshape(-1).view(np.uint8).data)  # raw bytes, no copy
                written += arr.nbytes
            if written != t.nbytes:
                raise RuntimeError(
                    f"tensor {t.name!r}: wrote {written} bytes, its shape needs {t.nbytes}."
                )
    return target


def save_tensors(
    tensors: Mapping[str, Any],
    path: str | Path,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write torch tensors or numpy arrays as a safetensors file, atomically, with tensors in
    name order and metadata keys sorted (the same content gives the same bytes; the
    safetensors library orders metadata by a hash). Reads back with `safetensors.safe_open`."""
    entries: list[tuple[str, str, tuple[int, ...], int]] = []
    blobs: list[bytes] = []
    for name in sorted(tensors):
        value = tensors[name]
        if hasattr(value, "detach"):  # a torch tensor: raw bytes without a numpy round trip
            t = value.detach().cpu().contiguous()
            dtype = str(t.dtype).removeprefix("torch.")
            blob = t.view(-1).view(_torch_uint8()).numpy().tobytes() if t.numel() else b""
            shape = tuple(int(d) for d in t.shape)
        else:
            arr = np.ascontiguousarray(value)
            dtype = arr.dtype.name
            blob = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            shape = tuple(int(d) for d in arr.shape)
        if dtype not in SAFETENSORS_DTYPES:
            raise UserInputError(f"dtype {dtype} cannot be written to a safetensors file here.")
        entries.append((name, SAFETENSORS_DTYPES[dtype], shape, len(blob)))
        blobs.append(blob)
    head = _header(entries, metadata or {})
    target = Path(path)
    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        f.write(head)
        for blob in blobs:
            f.write(blob)
    return target


def _torch_uint8() -> Any:
    import torch

    return torch.uint8


def read_safetensors_header(
    path: str | Path, what: str = "safetensors file"
) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file and where its data starts, or a one-sentence
    error for a missing, truncated or non-safetensors file (`what` names the file's kind in
    it, e.g. "feature file")."""
    p = Path(path)
    if not p.exists():
        raise UserInputError(f"{what[:1].upper()}{what[1:]} {p} does not exist.")
    if not p.is_file():
        raise UserInputError(f"{what[:1].upper()}{what[1:]} {p} is not a file.")
    size = p.stat().st_size
    not_st = f"{p} is not a {what}" if "safetensors" in what else f"{p} is not a safetensors {what}"
    try:
        with open(p, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise UserInputError(f"{not_st} (it is too short).")
            (n,) = struct.unpack("<Q", head)
            if n < 2 or n > min(MAX_HEADER, size - 8):
                raise UserInputError(f"{not_st} (no valid header).")
            header = json.loads(f.read(n).decode("utf-8"))
    except PermissionError as exc:
        raise UserInputError(f"Cannot read {p}: permission denied.") from exc
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserInputError(f"{not_st} (its header is not JSON).") from None
    except OSError as exc:
        raise UserInputError(f"Cannot read {p} ({exc.strerror or exc}).") from exc
    if not isinstance(header, dict):
        raise UserInputError(f"{not_st} (its header is not a JSON object).")
    return header, 8 + n


class ChunkLog:
    """A folder of numbered chunk files (safetensors) plus `state.json`, always consistent.

    A run appends chunks with `commit`; each commit writes its chunk file first and only then
    the state that names it, both atomically, so whatever kills the process, the folder holds
    a valid prefix of the run. `position` counts the run's units (images, say) covered by the
    committed chunks; `rows` the rows they hold; `extra` is the run's own JSON state, saved with
    every commit. `config` describes the run; resuming with a different one is refused.
    """

    STATE = "state.json"
    VERSION = 1

    def __init__(self, folder: Path, config: Mapping[str, Any]) -> None:
        self.folder = folder
        self.config = dict(config)
        self.position = 0
        self.rows = 0
        self.chunks: list[dict[str, Any]] = []
        self.extra: dict[str, Any] = {}

    @classmethod
    def open(cls, folder: Path, config: Mapping[str, Any], *, resume: bool, out: Path) -> ChunkLog:
        """Start a log in `folder` (which must not exist unless `resume`), or continue the one
        there. `out` is the file the run is building, for the error messages."""
        log = cls(folder, config)
        state_file = folder / cls.STATE
        if folder.exists() and not resume:
            raise UserInputError(
                f"{folder} holds an interrupted run into {out}; add --resume "
                "(resume=True) to continue it, or delete that folder to start over."
            )
        if resume and state_file.is_file():
            log._load(state_file, out)
        else:
            if folder.exists() and not folder.is_dir():
                raise UserInputError(f"Cannot use {folder}: it exists and is not a folder.")
            try:
                folder.mkdir(exist_ok=True)
            except OSError as exc:
                raise UserInputError(f"Cannot create {folder} ({exc.strerror or exc}).") from exc
            log._write_state()
        return log

    def _load(self, state_file: Path, out: Path) -> None:
        folder = self.folder
        try:
            state = json.loads(state_file.read_text())
            if state.get("version") != self.VERSION:
                raise ValueError("unknown version")
            old = state["config"]
            self.position = int(state["position"])
            self.rows = int(state["rows"])
            self.chunks = list(state["chunks"])
            self.extra = dict(state["extra"])
        except (OSError, ValueError, KeyError, TypeError):
            raise UserInputError(
                f"Cannot resume from {folder}: its state file is damaged; delete that folder "
                "to start over."
            ) from None
        for key, value in self.config.items():
            if old.get(key) != value:
                raise UserInputError(
                    f"Cannot resume {out}: the interrupted run used {key} {old.get(key)!r}, "
                    f"not {value!r}; use the same settings, or delete {folder} to start over."
                )
        for c in self.chunks:
            if not (folder / str(c["file"])).is_file():
                raise UserInputError(
                    f"Cannot resume from {folder}: chunk {c['file']} is missing; delete that "
                    "folder to start over."
                )

    def _write_state(self) -> None:
        state = {
            "version": self.VERSION,
            "config": self.config,
            "position": self.position,
            "rows": self.rows,
            "chunks": self.chunks,
            "extra": self.extra,
        }
        atomic_write_text(self.folder / self.STATE, json.dumps(state, sort_keys=True) + "\n")

    def commit(
        self,
        arrays: Mapping[str, NDArray[Any]] | None,
        *,
        position: int,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Append a chunk of equal-length `arrays` (or none) and move the state to `position`,
        with `extra` replacing the run's own state. On failure the log is as it was."""
        chunk: dict[str, Any] | None = None
        if arrays:
            lengths = {int(a.shape[0]) for a in arrays.values()}
            if len(lengths) != 1:
                raise ValueError("the arrays of one chunk must have equal lengths")
            name = f"chunk-{len(self.chunks):06d}.safetensors"
            save_tensors(dict(arrays), self.folder / name)
            chunk = {"file": name, "rows": lengths.pop()}
        old = (self.position, self.rows, len(self.chunks), self.extra)
        try:
            if chunk is not None:
                self.chunks.append(chunk)
                self.rows += int(chunk["rows"])
            self.position = position
            if extra is not None:
                self.extra = dict(extra)
            self._write_state()
        except BaseException:
            self.position, self.rows, self.extra = old[0], old[1], old[3]
            del self.chunks[old[2] :]
            raise

    def iter_chunks(self, key: str) -> Iterator[NDArray[Any]]:
        """The `key` array of every committed chunk, in order."""
        from safetensors import safe_open

        for c in self.chunks:
            with safe_open(str(self.folder / str(c["file"])), framework="numpy") as f:
                yield f.get_tensor(key)

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            shutil.rmtree(self.folder)
