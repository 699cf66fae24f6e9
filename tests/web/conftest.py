"""A live server on loopback for the API and browser tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from convscope.testing import require_package

require_package("fastapi")

from convscope.web import ServerConfig  # noqa: E402
from convscope.web.testing import live_server  # noqa: E402


@pytest.fixture
def serve() -> Callable[..., Any]:
    """`with serve(models=[...], ...) as (url, app):` a live server."""

    def start(**kwargs: Any) -> Any:
        kwargs.setdefault("device", "cpu")
        return live_server(ServerConfig(**kwargs))

    return start
