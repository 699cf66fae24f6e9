"""Test helpers for the web app (as `convscope.cli.testing` is for the CLI): a live server on
loopback, for API tests, browser tests and `bench/web.py`."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from fastapi import FastAPI

from convscope.web.app import ServerConfig, create_app, listening_socket

__all__ = ["live_server"]


@contextlib.contextmanager
def live_server(config: ServerConfig) -> Iterator[tuple[str, FastAPI]]:
    """(base URL, app) of a server for `config` (uvicorn in a thread, on a free loopback
    port), stopped on exit, which removes its folder."""
    import uvicorn

    app = create_app(config)
    sock = listening_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=1)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            sock.close()
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
