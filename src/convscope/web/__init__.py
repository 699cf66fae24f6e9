"""The local web app (`convscope serve`): a thin FastAPI layer over the library, with its
pages served from the package itself (no CDN, no network). See `convscope.web.app`."""

from __future__ import annotations

from convscope.web.app import (
    DEFAULT_QUEUE_LIMIT,
    DEFAULT_UPLOAD_MB,
    PAGES,
    ServerConfig,
    create_app,
    listening_socket,
)

__all__ = [
    "DEFAULT_QUEUE_LIMIT",
    "DEFAULT_UPLOAD_MB",
    "PAGES",
    "ServerConfig",
    "create_app",
    "listening_socket",
]
