"""What an atlas folder remembers between runs, so that nothing computed is computed again.

Every unit of work (a job) has a key: a JSON-able description of everything its outputs depend
on (model and weights, layer, channels, settings, the dataset's identity). When a job finishes,
its outputs are written atomically and then a record `.jobs/<kind>-<digest of key>.json`
holding the key and the SHA-256 of each output. A job is done when its record exists and every
output it names still has that hash, so a stale or damaged output is made again, and
outputs of another setting never pass for this one's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from convscope.data.files import atomic_write_bytes, atomic_write_text
from convscope.errors import UserInputError

__all__ = ["JobStore", "digest", "slug", "write_if_changed"]

JOBS = ".jobs"
PARTIAL = ".partial"


def digest(key: Mapping[str, Any], n: int = 12) -> str:
    """A short, stable hex digest of a JSON-able key."""
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


def slug(name: str) -> str:
    """A layer name as a folder name: letters, digits, '.', '_' and '-' kept, others '_'."""
    out = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)
    return out.strip(".") or "layer"


def _sha(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def write_if_changed(path: Path, data: str | bytes) -> bool:
    """Write `data` to `path` atomically unless the file already holds exactly it (so a run
    that changes nothing leaves every file as it was). True when it wrote."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with contextlib.suppress(OSError):
        if path.read_bytes() == raw:
            return False
    atomic_write_bytes(path, raw)
    return True


class JobStore:
    """The `.jobs/` records (and `.partial/` checkpoints) of one atlas folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.jobs = root / JOBS
        self.partial = root / PARTIAL

    def prepare(self) -> None:
        for folder in (self.jobs, self.partial):
            try:
                folder.mkdir(exist_ok=True)
            except OSError as exc:
                raise UserInputError(f"Cannot create {folder} ({exc.strerror or exc}).") from exc

    def record_path(self, kind: str, key: Mapping[str, Any]) -> Path:
        return self.jobs / f"{kind}-{digest(key)}.json"

    def checkpoint(self, kind: str, key: Mapping[str, Any]) -> Path:
        """Where a job's own checkpoint lives while it runs (removed when it is done)."""
        return self.partial / f"{kind}-{digest(key)}.safetensors"

    def record(self, kind: str, key: Mapping[str, Any]) -> dict[str, Any] | None:
        """The job's record when it is done and its outputs are intact, else None."""
        path = self.record_path(kind, key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("key") != json.loads(json.dumps(key)):
            return None
        files = data.get("files")
        if not isinstance(files, dict):
            return None
        for rel, sha in files.items():
            if _sha(self.root / rel) != sha:
                return None
        return data

    def done(self, kind: str, key: Mapping[str, Any]) -> bool:
        return self.record(kind, key) is not None

    def finish(
        self,
        kind: str,
        key: Mapping[str, Any],
        files: Sequence[Path],
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a job as done, once its outputs `files` (inside the folder) are written."""
        hashes = {}
        for f in files:
            sha = _sha(f)
            if sha is None:
                raise UserInputError(f"Cannot read {f}, which this run has just written.")
            hashes[f.relative_to(self.root).as_posix()] = sha
        data = {"key": key, "files": hashes, **(dict(extra) if extra else {})}
        atomic_write_text(self.record_path(kind, key), json.dumps(data, indent=1, sort_keys=True))
        with contextlib.suppress(OSError):
            self.checkpoint(kind, key).unlink()
