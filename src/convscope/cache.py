"""Where convscope keeps converted weights: `$CONVSCOPE_CACHE`, else the XDG cache."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """The cache directory (created on demand by callers that write to it)."""
    env = os.environ.get("CONVSCOPE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "convscope"
