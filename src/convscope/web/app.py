"""`convscope serve`'s FastAPI app: the pages (static files in the package, no CDN) and a
JSON API over the library.

- `POST /api/images` takes an image as the raw request body (at most `upload_limit` bytes:
  413 past it), decodes it with the CLI's guards (400 with the CLI's sentence otherwise) and
  answers its id; `POST /api/samples/{name}` does the same for a bundled sample.
- `POST /api/jobs` queues a job on its model's lane (503 with Retry-After when the lane's
  queue is full) and answers its id and queue position; with `?wait=true` it answers when the
  job is done (400 with the job's sentence when it failed).
- `GET /api/jobs/{id}/events` streams the job's progress as server-sent events;
  `GET /api/jobs/{id}/preview.png` is its newest preview; `DELETE /api/jobs/{id}` cancels it.
- `GET /api/results/{id}.png` is a result, with its recipe in the PNG (`?download=1` to save).

Nothing from a request reaches the filesystem as a path: images, jobs and results are random
ids; models, samples, methods and layers are names checked against what the server has.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    FileResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from convscope.data.images import DEFAULT_MAX_PIXELS, png_bytes
from convscope.errors import UnknownNameError, UserInputError
from convscope.web import tasks
from convscope.web.jobs import FINISHED, Job, JobContext, Lanes, QueueFull
from convscope.web.store import Store, StoredImage

__all__ = [
    "DEFAULT_QUEUE_LIMIT",
    "DEFAULT_UPLOAD_MB",
    "PAGES",
    "ServerConfig",
    "create_app",
    "listening_socket",
]

DEFAULT_UPLOAD_MB = 20.0
DEFAULT_QUEUE_LIMIT = 32
PAGES = ("explore", "attribute", "synthesize", "stylize")
STATIC = resources.files("convscope.web") / "static"


@dataclass(frozen=True)
class ServerConfig:
    """What a server is started with (the CLI's options)."""

    models: Sequence[str] = ("efficientnet_lite0", "vgg16")
    device: str = "cpu"
    upload_mb: float = DEFAULT_UPLOAD_MB
    queue_limit: int = DEFAULT_QUEUE_LIMIT
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    dataset: str | None = None
    stylenet: str = "four-styles"
    allowed_hosts: Sequence[str] | None = None  # Host headers answered (None: any)

    def check(self) -> None:
        from convscope.models import model_entries

        if not self.models:
            raise UserInputError("serve needs at least one model.")
        known = {e.name for e in model_entries()}
        for name in self.models:
            if name not in known and ":" not in name:
                raise UnknownNameError("model", name, sorted(known))
        if not (math.isfinite(self.upload_mb) and self.upload_mb > 0):
            raise UserInputError(
                f"the upload limit must be a positive size in MB, got {self.upload_mb}."
            )
        if self.queue_limit < 1:
            raise UserInputError(f"the queue limit must be at least 1, got {self.queue_limit}.")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise UserInputError(f"max_pixels must be at least 1, got {self.max_pixels}.")


# --- request bodies (every field checked; unknown fields and non-finite numbers refused) ---


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


Name = Annotated[str, Field(min_length=1, max_length=200)]
Id = Annotated[str, Field(min_length=1, max_length=64)]


class PredictJob(_Body):
    kind: Literal["predict"]
    model: Name
    image: Id


class ActivationsJob(_Body):
    kind: Literal["activations"]
    model: Name
    image: Id
    layer: Name


class ChannelJob(_Body):
    kind: Literal["channel"]
    model: Name
    image: Id
    layer: Name
    channel: Annotated[int, Field(ge=0, le=1_000_000)]


class ScanJob(_Body):
    kind: Literal["scan"]
    model: Name
    layer: Name
    k: Annotated[int, Field(ge=1, le=64)] = 6


class AttributeJob(_Body):
    kind: Literal["attribute"]
    model: Name
    image: Id
    methods: Annotated[list[Name], Field(min_length=1, max_length=5)] = [
        "gradient",
        "guided",
        "gradcam",
    ]
    target: Name | None = None
    faithfulness_steps: Annotated[int, Field(ge=2, le=256)] = 16
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0


class SynthesisParams(_Body):
    steps: Annotated[int, Field(ge=1, le=5000)] | None = None
    size: Annotated[int, Field(ge=16, le=1024)] | None = None
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    # Each knob left out keeps the recipe's own default.
    target: Name | int | None = None
    layer: Name | None = None
    channel: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    preset: Name | None = None
    eps: Annotated[float, Field(gt=0, le=64)] | None = None  # in 1/255 units
    untargeted: bool | None = None
    octaves: Annotated[int, Field(ge=1, le=8)] | None = None
    style_weight: Annotated[float, Field(ge=0, le=1e6)] | None = None
    content_weight: Annotated[float, Field(ge=0, le=1e6)] | None = None


class SynthesisJob(_Body):
    kind: Literal["synthesize"]
    recipe: Name  # one of tasks.SYNTHESES, checked when the job is made
    model: Name
    image: Id | None = None
    style: Id | None = None
    params: SynthesisParams = SynthesisParams()


class StylizeJob(_Body):
    kind: Literal["stylize"]
    image: Id
    weights: Annotated[
        list[Annotated[float, Field(ge=0, le=1e6)]], Field(min_length=1, max_length=64)
    ]
    size: Annotated[int, Field(ge=32, le=1024)] = 256


JobBody = Annotated[
    PredictJob | ActivationsJob | ChannelJob | ScanJob | AttributeJob | SynthesisJob | StylizeJob,
    Field(discriminator="kind"),
]


class _JobRequest(BaseModel):
    job: JobBody


def _sentence(exc: RequestValidationError) -> str:
    """A validation error as one sentence: where, and what was wrong."""
    errors = exc.errors()
    if not errors:
        return "the request is not valid."
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "job"))
    msg = str(first.get("msg", "is not valid")).rstrip(".")
    return f"{where or 'the request'}: {msg}."


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to `host`:`port` (0: any free port) for uvicorn, with TCP_NODELAY,
    which the connections it accepts inherit (on Linux): uvicorn sets it on the sockets it
    makes itself but not on one it is handed, and without it Nagle's algorithm and the
    client's delayed ACK add 40 ms to every response on a kept-alive connection.
    Raises `UserInputError` when the address cannot be bound (in use, not this machine's)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserInputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}.") from None
    return sock


def _encode_preview(image: Any) -> bytes:
    """A preview ((B, 3, H, W) or (3, H, W) in [0, 1]; the first of a batch) as PNG."""
    if isinstance(image, torch.Tensor) and image.dim() == 4:
        image = image[0]
    return png_bytes(image)


def create_app(config: ServerConfig = ServerConfig()) -> FastAPI:
    """The app for `config` (its names are checked here: one sentence otherwise)."""
    config.check()
    upload_limit = int(config.upload_mb * 2**20)
    from convscope.device import resolve_device

    device = resolve_device(config.device)
    store = Store(max_pixels=config.max_pixels)
    served = tasks.Served(
        models=list(config.models),
        store=store,
        device=device,
        stylenet=config.stylenet,
        dataset=config.dataset,
    )
    if config.dataset is not None:
        served.data()  # read now: a bad name is one sentence at start-up, not at the first scan
    lanes = Lanes(limit=config.queue_limit, encode_preview=_encode_preview)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            lanes.close()
            store.close()

    app = FastAPI(title="convscope", lifespan=lifespan, docs_url=None, redoc_url=None)
    if config.allowed_hosts is not None:  # a page elsewhere cannot rebind its name to us
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(config.allowed_hosts))
    app.state.served = served
    app.state.lanes = lanes
    app.state.store = store
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _sentence(exc)}, status_code=400)

    @app.exception_handler(UnknownNameError)
    async def _unknown(_: Request, exc: UnknownNameError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=404)

    @app.exception_handler(UserInputError)
    async def _bad(_: Request, exc: UserInputError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(QueueFull)
    async def _full(_: Request, exc: QueueFull) -> JSONResponse:
        return JSONResponse(
            {"error": str(exc)}, status_code=503, headers={"Retry-After": str(exc.retry_after)}
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    # --- pages ---

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/explore")

    page_html = (STATIC / "index.html").read_text(encoding="utf-8")

    @app.get("/{page}", include_in_schema=False)
    async def page(page: str) -> Response:
        if page not in PAGES:
            raise HTTPException(404, f"there is no page {page!r}.")
        return Response(page_html, media_type="text/html")

    # --- what the server has ---

    @app.get("/api/info")
    async def info() -> dict[str, Any]:
        from convscope.attribute import METHOD_NAMES
        from convscope.data.samples import sample_names

        return {
            "models": list(config.models),
            "samples": sample_names(),
            "methods": list(METHOD_NAMES),
            "dataset": config.dataset,
            "upload_mb": config.upload_mb,
            "queue_limit": config.queue_limit,
            "syntheses": list(tasks.SYNTHESES),
            "device": str(device),
        }

    @app.get("/api/models/{model}")
    async def model_info(model: str) -> dict[str, Any]:
        served.check_model(model)
        cm = await asyncio.to_thread(served.model, model)
        layers = await asyncio.to_thread(served.layers, model)
        return {
            "name": cm.name,
            "layers": layers,
            "default_layer": cm.default_layer,
            "classes": len(cm.classes or ()),
            "weights": str(cm.source),
        }

    @app.get("/api/stylenet")
    async def stylenet_info() -> dict[str, Any]:
        _, net_info = await asyncio.to_thread(served.net)
        return {"name": config.stylenet, "styles": list(net_info.styles)}

    # --- images ---

    def _image_answer(stored: StoredImage) -> dict[str, Any]:
        return {
            "id": stored.id,
            "label": stored.label,
            "width": int(stored.image.shape[-1]),
            "height": int(stored.image.shape[-2]),
        }

    @app.post("/api/images")
    async def upload(
        request: Request, name: Annotated[str, Query(max_length=200)] = "upload"
    ) -> dict[str, Any]:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > upload_limit:
            raise HTTPException(
                413, f"the upload is larger than the limit of {config.upload_mb:g} MB."
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > upload_limit:
                raise HTTPException(
                    413, f"the upload is larger than the limit of {config.upload_mb:g} MB."
                )
            chunks.append(chunk)
        if size == 0:
            raise UserInputError("the upload is empty; send an image file as the request body.")
        label = "".join(ch for ch in Path(name).name if ch.isprintable())[:80] or "upload"
        stored = await asyncio.to_thread(store.add_upload, b"".join(chunks), label=label)
        return _image_answer(stored)

    @app.post("/api/samples/{name}")
    async def sample(name: str) -> dict[str, Any]:
        from convscope.data.samples import load_sample, sample_names

        if name not in sample_names():
            raise HTTPException(404, f"there is no sample {name!r}.")
        image = await asyncio.to_thread(load_sample, name)
        return _image_answer(store.add_image(image, label=name))

    def _image(image_id: str) -> StoredImage:
        stored = store.image(image_id)
        if stored is None:
            raise HTTPException(404, "there is no such image on this server (upload it again).")
        return stored

    def _maybe_image(image_id: str | None) -> StoredImage | None:
        return None if image_id is None else _image(image_id)

    @app.get("/api/images/{image_id}.png")
    async def image_png(image_id: str) -> Response:
        stored = _image(image_id)
        return Response(await asyncio.to_thread(png_bytes, stored.image), media_type="image/png")

    # --- jobs ---

    def _job_for(body: Any) -> Job:
        """The job a request body asks for; every name and id is checked here, before it
        is queued (404 for what the server does not have)."""
        run: Callable[[JobContext], dict[str, Any]]
        if isinstance(body, StylizeJob):
            run = functools.partial(
                tasks.stylize,
                served=served,
                image=_image(body.image),
                weights=body.weights,
                size=body.size,
            )
            return Job("stylize", f"stylenet:{config.stylenet}", body.model_dump(), run)
        model = served.check_model(body.model)
        kind = body.kind
        if isinstance(body, PredictJob):
            run = functools.partial(
                tasks.predict, served=served, model=model, image=_image(body.image)
            )
        elif isinstance(body, ActivationsJob):
            run = functools.partial(
                tasks.activations,
                served=served,
                model=model,
                image=_image(body.image),
                layer=body.layer,
            )
        elif isinstance(body, ChannelJob):
            run = functools.partial(
                tasks.channel,
                served=served,
                model=model,
                image=_image(body.image),
                layer=body.layer,
                channel=body.channel,
            )
        elif isinstance(body, ScanJob):
            run = functools.partial(
                tasks.scan, served=served, model=model, layer=body.layer, k=body.k
            )
        elif isinstance(body, AttributeJob):
            run = functools.partial(
                tasks.attribute,
                served=served,
                model=model,
                image=_image(body.image),
                methods=body.methods,
                target=body.target,
                faithfulness_steps=body.faithfulness_steps,
                seed=body.seed,
            )
        else:
            assert isinstance(body, SynthesisJob)
            if body.recipe not in tasks.SYNTHESES:
                raise UnknownNameError("recipe", body.recipe, tasks.SYNTHESES)
            kind = body.recipe
            run = functools.partial(
                tasks.synthesize,
                served=served,
                kind=body.recipe,
                model=model,
                image=_maybe_image(body.image),
                style=_maybe_image(body.style),
                params=body.params.model_dump(exclude_none=True),
            )
        return Job(kind, model, body.model_dump(), run)

    def _summary(job: Job) -> dict[str, Any]:
        return job.summary(lanes.position(job))

    @app.post("/api/jobs", status_code=202)
    async def submit(body: _JobRequest, wait: bool = False) -> Response:
        job = _job_for(body.job)
        lanes.submit(job)
        if not wait:
            return JSONResponse(_summary(job), status_code=202)
        loop = asyncio.get_running_loop()
        finished = asyncio.Event()

        def wake(_: Job) -> None:
            loop.call_soon_threadsafe(finished.set)

        job.add_done_callback(wake)
        await finished.wait()
        if job.state == "failed":
            return JSONResponse({"error": job.error, "job": _summary(job)}, status_code=400)
        return JSONResponse(_summary(job), status_code=200)

    def _job(job_id: str) -> Job:
        job = lanes.get(job_id) if len(job_id) <= 64 else None
        if job is None:
            raise HTTPException(404, "there is no such job on this server.")
        return job

    @app.get("/api/jobs/{job_id}")
    async def job_status(job_id: str) -> dict[str, Any]:
        return _summary(_job(job_id))

    @app.delete("/api/jobs/{job_id}")
    async def cancel(job_id: str) -> dict[str, Any]:
        job = _job(job_id)
        lanes.cancel(job)
        return _summary(job)

    @app.get("/api/jobs/{job_id}/preview.png")
    async def preview(job_id: str) -> Response:
        job = _job(job_id)
        if job.preview is None:
            raise HTTPException(404, "this job has no preview yet.")
        return Response(job.preview, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/api/jobs/{job_id}/events")
    async def events(job_id: str, request: Request) -> StreamingResponse:
        job = _job(job_id)

        async def stream() -> AsyncIterator[str]:
            sent = 0
            last: tuple[Any, ...] = ()
            while True:
                count, state = job.count, job.state
                new = [e for e in list(job.events)[-(count - sent) :]] if count > sent else []
                sent = count
                for event in new:
                    yield f"event: progress\ndata: {json.dumps(event)}\n\n"
                position = lanes.position(job)
                now = (state, position, job.previews)
                if now != last:
                    last = now
                    yield f"event: status\ndata: {json.dumps(_summary(job))}\n\n"
                if state in FINISHED and count == sent:
                    yield f"event: end\ndata: {json.dumps(_summary(job))}\n\n"
                    return
                if await request.is_disconnected():
                    return
                await asyncio.sleep(0.05)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    # --- results ---

    @app.get("/api/results/{result_id}.png")
    async def result_png(result_id: str, download: bool = False) -> FileResponse:
        result = store.result(result_id)
        if result is None:
            raise HTTPException(404, "there is no such result on this server.")
        return FileResponse(
            result.path,
            media_type="image/png",
            filename=result.filename if download else None,
            content_disposition_type="attachment" if download else "inline",
        )

    @app.get("/api/results/{result_id}.json")
    async def result_meta(result_id: str) -> dict[str, Any]:
        result = store.result(result_id)
        if result is None:
            raise HTTPException(404, "there is no such result on this server.")
        return result.meta

    return app
