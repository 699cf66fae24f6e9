"""`convscope serve`: the local web app (Explore, Attribute, Synthesize, Stylize)."""

from __future__ import annotations

import ipaddress
import sys
from typing import Annotated

import typer

from convscope.cli.application import app
from convscope.cli.common import console, library_constant
from convscope.cli.options import MAX_PIXELS_DEFAULT, DeviceOpt, MaxPixelsOpt, QuietOpt

__all__ = ["is_loopback", "serve_cmd"]

UPLOAD_MB: float = library_constant("convscope.web.app", "DEFAULT_UPLOAD_MB")
QUEUE_LIMIT: int = library_constant("convscope.web.app", "DEFAULT_QUEUE_LIMIT")
DEFAULT_MODELS = "efficientnet_lite0,vgg16"


def is_loopback(host: str) -> bool:
    """Whether `host` only takes connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command("serve")
def serve_cmd(
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="The address to listen on. The default takes connections from this machine "
            "only; another address is warned about: anyone who reaches it can run jobs.",
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="The port (0: any free one).")
    ] = 8765,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="Comma-separated models to serve (loaded on first use); only these can be "
            "used, and none can be uploaded.",
        ),
    ] = DEFAULT_MODELS,
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset",
            help="A dataset (a folder or a built-in name) whose top patches Explore can show "
            "after a scan.",
        ),
    ] = None,
    upload_limit: Annotated[
        float, typer.Option("--upload-limit", help="The largest upload, in MB (413 past it).")
    ] = UPLOAD_MB,
    queue_limit: Annotated[
        int,
        typer.Option(
            "--queue-limit",
            min=1,
            help="Jobs waiting per model; past it new jobs get 503 with a Retry-After.",
        ),
    ] = QUEUE_LIMIT,
    device: DeviceOpt = "auto",
    max_pixels: MaxPixelsOpt = MAX_PIXELS_DEFAULT,
    quiet: QuietOpt = False,
) -> None:
    """Serve the web app: Explore (predictions, activation grids, a channel over the image
    and its top patches), Attribute (saliency side by side, faithfulness, GrabCut),
    Synthesize (every recipe, live previews, a queue with cancel) and Stylize (the shipped
    fast style network with a blend slider and a 4-style pad).

    Uploads and results stay in a temporary folder that is removed when the server stops."""
    models = [m.strip() for m in model.split(",") if m.strip()]
    from convscope.web import ServerConfig, create_app, listening_socket

    config = ServerConfig(
        models=models,
        device=device,
        upload_mb=upload_limit,
        queue_limit=queue_limit,
        max_pixels=max_pixels,
        dataset=dataset,
        # On loopback, only requests that name this machine (no DNS rebinding from a page).
        allowed_hosts=("127.0.0.1", "localhost", "::1", "[::1]") if is_loopback(host) else None,
    )
    sock = listening_socket(host, port)
    try:
        web = create_app(config)  # checks the names; makes the folder that lifespan removes
    except BaseException:
        sock.close()
        raise
    if not is_loopback(host):
        sys.stderr.write(
            f"Warning: serving on {host}, not 127.0.0.1: anyone who can reach this address "
            "can upload images and run jobs.\n"
        )
    import uvicorn

    from convscope.cli import signals

    signals.release()  # set-up is over: a Ctrl-C held until now stops here, and later ones too
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    if not quiet:
        console.print(
            f"convscope serves http://{shown}:{bound}/ (Ctrl-C stops it).", highlight=False
        )
    server = uvicorn.Server(
        uvicorn.Config(
            web,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
            lifespan="on",
        )
    )
    try:
        server.run(sockets=[sock])
    finally:  # also when Ctrl-C came before the server's own shutdown could run
        web.state.lanes.close()
        web.state.store.close()
        sock.close()
