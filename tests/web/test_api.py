"""The web API on the tiny model: uploads and their limits, names that never become paths,
jobs with their events, previews and results, and a bounded queue under load."""

from __future__ import annotations

import io
import json
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from convscope.testing import require_package

require_package("httpx")

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from convscope.web import ServerConfig, create_app  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _png(size: tuple[int, int] = (40, 30), color: tuple[int, int, int] = (200, 80, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _bomb(side: int = 20_000) -> bytes:
    """A tiny PNG that claims side × side pixels (400 M for 20,000): one IDAT of zeros."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])  # 1-bit grayscale
    rows = zlib.compress(b"\0" * ((side // 8 + 1) * 64), 9)  # a few rows; enough to parse
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


@pytest.fixture
def client() -> Iterator[TestClient]:
    app = create_app(ServerConfig(models=["tiny"], device="cpu", upload_mb=0.05))
    with TestClient(app) as c:
        yield c


def _upload(client: TestClient, data: bytes, name: str = "x.png") -> httpx.Response:
    return client.post(f"/api/images?name={name}", content=data)


def _image(client: TestClient) -> str:
    r = _upload(client, _png())
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def _job(client: TestClient, job: dict[str, Any], wait: bool = True) -> httpx.Response:
    return client.post(f"/api/jobs{'?wait=true' if wait else ''}", json={"job": job})


# --- uploads ---


def test_an_upload_is_decoded_and_can_be_fetched(client: TestClient) -> None:
    r = _upload(client, _png((40, 30)), name="photo.png")
    assert r.status_code == 200
    body = r.json()
    assert (body["width"], body["height"], body["label"]) == (40, 30, "photo.png")
    png = client.get(f"/api/images/{body['id']}.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (40, 30)


def test_an_oversize_upload_gets_413(client: TestClient) -> None:
    big = _png((400, 400)) + b"\0" * 60_000  # the limit is 0.05 MB
    assert _upload(client, big).status_code == 413


def test_an_oversize_upload_without_a_length_gets_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"\0" * 8192

    r = client.post("/api/images", content=chunks())  # chunked: no Content-Length
    assert r.status_code == 413
    assert "limit" in r.json()["error"]


def test_a_non_image_gets_400_with_the_clis_sentence(client: TestClient) -> None:
    r = _upload(client, b"%PDF-1.4 this is not an image")
    assert r.status_code == 400
    assert r.json()["error"] == "the uploaded file is not an image file that Pillow can read."


def test_a_truncated_image_gets_400(client: TestClient) -> None:
    r = _upload(client, _png((64, 64))[:60])
    assert r.status_code == 400 and "image" in r.json()["error"]


def test_an_empty_upload_gets_400(client: TestClient) -> None:
    r = _upload(client, b"")
    assert r.status_code == 400 and "empty" in r.json()["error"]


def test_a_decompression_bomb_gets_400_before_decoding() -> None:
    app = create_app(ServerConfig(models=["tiny"], device="cpu"))  # the default limits
    with TestClient(app) as c:
        r = _upload(c, _bomb())
    assert r.status_code == 400
    error = r.json()["error"]
    assert "20000×20000" in error and "more than the limit" in error
    assert "/tmp" not in error  # the server's own paths are not told


def test_uploads_are_written_only_inside_the_servers_folder_which_goes_on_exit(
    tmp_path: Path,
) -> None:
    app = create_app(ServerConfig(models=["tiny"], device="cpu"))
    with TestClient(app) as c:
        root = app.state.store.root
        r = _upload(c, _png(), name="../../../../tmp/evil.png")
        assert r.status_code == 200
        assert r.json()["label"] == "evil.png"  # a label only, never a path
        assert not Path("/tmp/evil.png").exists()
        assert all(p.parent == root for p in root.iterdir())
    assert not root.exists()


# --- names never become paths ---

TRAVERSALS = [
    "..",
    "../../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e",
    "/etc/passwd",
    "a\\..\\b",
]


@pytest.mark.parametrize("evil", TRAVERSALS)
def test_path_traversal_in_any_name_gets_400_or_404(client: TestClient, evil: str) -> None:
    image = _image(client)
    base = {"kind": "activations", "model": "tiny", "image": image, "layer": "relu1"}
    attempts = [
        client.get(f"/api/images/{evil}.png"),
        client.get(f"/api/results/{evil}.png"),
        client.get(f"/api/results/{evil}.json"),
        client.get(f"/api/jobs/{evil}"),
        client.get(f"/api/jobs/{evil}/events"),
        client.get(f"/api/jobs/{evil}/preview.png"),
        client.delete(f"/api/jobs/{evil}"),
        client.get(f"/api/models/{evil}"),
        client.post(f"/api/samples/{evil}"),
        client.get(f"/{evil}"),
        client.get(f"/static/{evil}"),
        _job(client, {**base, "model": evil}),
        _job(client, {**base, "image": evil}),
        _job(client, {**base, "layer": evil}),
        _job(client, {"kind": "predict", "model": "tiny", "image": evil}),
        _job(client, {"kind": "stylize", "image": evil, "weights": [1, 0, 0, 0]}),
        _job(client, {"kind": "attribute", "model": "tiny", "image": image, "methods": [evil]}),
        _job(client, {"kind": "attribute", "model": "tiny", "image": image, "target": evil}),
        _job(client, {"kind": "synthesize", "recipe": evil, "model": "tiny"}),
        _job(
            client,
            {"kind": "synthesize", "recipe": "texture", "model": "tiny", "style": evil},
        ),
    ]
    for r in attempts:
        assert "root:" not in r.text  # /etc/passwd never comes back
        sent = r.history[0].request if r.history else r.request
        if evil not in str(sent.url) and evil not in sent.content.decode():
            continue  # the client resolved "a/.." itself: the name never reached the server
        assert r.status_code in (400, 404), (sent.url, r.status_code, r.text)


def test_unknown_fields_and_non_finite_numbers_are_refused(client: TestClient) -> None:
    image = _image(client)
    r = _job(client, {"kind": "predict", "model": "tiny", "image": image, "path": "/etc"})
    assert r.status_code == 400 and "path" in r.json()["error"]
    body = json.dumps(
        {"job": {"kind": "stylize", "image": image, "weights": [float("nan"), 1, 0, 0]}}
    )
    r = client.post("/api/jobs", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400


# --- jobs ---


def test_predict_activations_and_channel(client: TestClient) -> None:
    image = _image(client)
    r = _job(client, {"kind": "predict", "model": "tiny", "image": image})
    assert r.status_code == 200
    names = [p["name"] for p in r.json()["result"]["predictions"]]
    assert names[0] == "warm"  # the tiny model's warm detector, on an orange image
    r = _job(client, {"kind": "activations", "model": "tiny", "image": image, "layer": "relu1"})
    grid = r.json()["result"]
    assert grid["channels"] == 4 and grid["shown"] == 4
    sprite = Image.open(io.BytesIO(client.get(f"/api/results/{grid['sprite']}.png").content))
    rows = -(-grid["shown"] // grid["ncol"])
    assert sprite.size == (grid["ncol"] * grid["tile"], rows * grid["tile"])
    r = _job(
        client, {"kind": "channel", "model": "tiny", "image": image, "layer": "relu1", "channel": 9}
    )
    assert r.status_code == 400 and "out of range" in r.json()["error"]
    info = client.get("/api/models/tiny").json()
    assert {"name": "relu1", "dotted": "features.relu1"} in [
        {k: layer[k] for k in ("name", "dotted")} for layer in info["layers"]
    ] or any(layer["name"] == "relu1" for layer in info["layers"])


def test_a_result_downloads_as_png_with_its_recipe(client: TestClient) -> None:
    image = _image(client)
    r = _job(
        client, {"kind": "channel", "model": "tiny", "image": image, "layer": "relu1", "channel": 0}
    )
    rid = r.json()["result"]["overlay"]
    got = client.get(f"/api/results/{rid}.png?download=1")
    assert got.status_code == 200
    assert "attachment" in got.headers["content-disposition"]
    assert "relu1-ch0.png" in got.headers["content-disposition"]
    recipe = json.loads(Image.open(io.BytesIO(got.content)).text["convscope"])
    assert recipe["recipe"] == "activation-overlay" and recipe["model"] == "tiny"
    assert recipe["params"] == {"layer": "relu1", "channel": 0, "image": "x.png"}
    assert client.get(f"/api/results/{rid}.json").json() == recipe


def test_a_synthesis_streams_progress_and_previews(client: TestClient) -> None:
    r = _job(
        client,
        {
            "kind": "synthesize",
            "recipe": "visualize",
            "model": "tiny",
            "params": {"target": "warm", "steps": 12, "size": 32, "preset": "simonyan"},
        },
        wait=False,
    )
    assert r.status_code == 202
    job = r.json()["id"]
    with client.stream("GET", f"/api/jobs/{job}/events") as stream:
        text = "".join(stream.iter_text())
    events = [
        (block.split("\n")[0].removeprefix("event: "), json.loads(block.split("data: ", 1)[1]))
        for block in text.strip().split("\n\n")
    ]
    progress = [e for kind, e in events if kind == "progress"]
    assert len(progress) >= 3
    assert [e["done"] for e in progress][-1] == 12
    assert any(e["preview"] is not None for e in progress)
    kind, end = events[-1]
    assert kind == "end" and end["state"] == "done"
    assert client.get(f"/api/jobs/{job}/preview.png").status_code == 200
    final = client.get(f"/api/results/{end['result']['image']}.png")
    assert final.status_code == 200


def test_a_failed_job_answers_400_with_its_sentence(client: TestClient) -> None:
    r = _job(
        client,
        {"kind": "synthesize", "recipe": "style", "model": "tiny", "params": {"steps": 2}},
    )
    assert r.status_code == 400
    assert r.json()["error"] == "style needs a content image; upload or pick one."


def test_a_sample_is_an_image(client: TestClient) -> None:
    r = client.post("/api/samples/coffee")
    assert r.status_code == 200 and r.json()["label"] == "coffee"
    assert client.post("/api/samples/nope").status_code == 404


def test_pages_are_served_from_the_package_with_no_outside_address(client: TestClient) -> None:
    for page in ("explore", "attribute", "synthesize", "stylize"):
        html = client.get(f"/{page}").text
        assert "/static/app.js" in html
        assert "http://" not in html and "https://" not in html
    assert client.get("/", follow_redirects=False).headers["location"] == "/explore"
    for name in ("app.js", "style.css"):
        text = client.get(f"/static/{name}").text
        assert "http://" not in text and "https://" not in text and "//cdn" not in text


def test_the_configuration_is_checked() -> None:
    from convscope.errors import UserInputError

    for bad in (
        {"models": ["no-such-model"]},
        {"models": []},
        {"upload_mb": float("inf")},
        {"upload_mb": 0},
        {"queue_limit": 0},
        {"dataset": "no-such-dataset"},
    ):
        with pytest.raises(UserInputError):
            create_app(ServerConfig(**{"models": ["tiny"], "device": "cpu", **bad}))


# --- load on loopback ---


def test_50_concurrent_requests_are_queued_and_all_answered(serve: Any) -> None:
    with serve(models=["tiny"], queue_limit=64) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as c:
            image = c.post("/api/images", content=_png()).json()["id"]

        def ask(i: int) -> int:
            with httpx.Client(base_url=url, timeout=60) as c:
                job = {"kind": "predict", "model": "tiny", "image": image}
                return c.post("/api/jobs?wait=true", json={"job": job}).status_code

        with ThreadPoolExecutor(50) as pool:
            codes = list(pool.map(ask, range(50)))
        assert codes == [200] * 50
        assert httpx.get(f"{url}/api/info", timeout=10).status_code == 200


def test_past_the_queue_limit_new_jobs_get_503_with_retry_after(serve: Any) -> None:
    with serve(models=["tiny"], queue_limit=4) as (url, app):
        release = threading.Event()
        lanes = app.state.lanes
        from convscope.web.jobs import Job

        def hold(ctx: Any) -> dict[str, Any]:
            release.wait(30)
            return {}

        lanes.submit(Job("hold", "tiny", {}, hold))  # keeps the lane busy
        with httpx.Client(base_url=url, timeout=60) as c:
            image = c.post("/api/images", content=_png()).json()["id"]

        def ask(i: int) -> httpx.Response:
            with httpx.Client(base_url=url, timeout=60) as c:
                job = {"kind": "predict", "model": "tiny", "image": image}
                return c.post("/api/jobs", json={"job": job})

        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(ask, range(20)))
        codes = sorted(r.status_code for r in answers)
        assert codes.count(202) == 4 and codes.count(503) == 16
        assert all(int(r.headers["retry-after"]) >= 1 for r in answers if r.status_code == 503)
        release.set()
        accepted = [r.json()["id"] for r in answers if r.status_code == 202]
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=url, timeout=60) as c:
            while time.monotonic() < deadline:
                states = [c.get(f"/api/jobs/{j}").json()["state"] for j in accepted]
                if all(s == "done" for s in states):
                    break
                time.sleep(0.05)
            assert states == ["done"] * 4
            assert (
                c.post(
                    "/api/jobs", json={"job": {"kind": "predict", "model": "tiny", "image": image}}
                ).status_code
                == 202
            )


def test_a_scan_of_the_servers_dataset_gives_a_channels_top_patches(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    colors = [(250, 40, 20), (20, 40, 250), (30, 30, 30), (240, 240, 240), (200, 120, 30)]
    for i, color in enumerate(colors):
        (folder / f"{i}.png").write_bytes(_png((24, 24), color))
    app = create_app(ServerConfig(models=["tiny"], device="cpu", dataset=str(folder)))
    with TestClient(app) as c:
        image = _image(c)
        ask = {"kind": "channel", "model": "tiny", "image": image, "layer": "relu1", "channel": 0}
        assert _job(c, ask).json()["result"]["patches"] is None  # no scan yet
        r = _job(c, {"kind": "scan", "model": "tiny", "layer": "relu1", "k": 3})
        assert r.status_code == 200 and r.json()["result"]["images"] == 5
        assert r.json()["events"] >= 1  # the scan's progress was streamed
        patches = _job(c, ask).json()["result"]["patches"]
        assert patches is not None
        assert c.get(f"/api/results/{patches}.png").status_code == 200
        layer = {"kind": "activations", "model": "tiny", "image": image, "layer": "relu1"}
        assert _job(c, layer).json()["result"]["scanned"] is True


def test_a_scan_needs_a_dataset(client: TestClient) -> None:
    r = _job(client, {"kind": "scan", "model": "tiny", "layer": "relu1"})
    assert r.status_code == 400 and "--dataset" in r.json()["error"]


def test_a_recipe_without_its_layer_says_so(client: TestClient) -> None:
    image = _image(client)
    for recipe in ("invert", "dream"):
        body = {"kind": "synthesize", "recipe": recipe, "model": "tiny", "image": image}
        r = _job(client, body)
        assert r.status_code == 400
        assert r.json()["error"] == f"{recipe} needs a layer, e.g. relu3_3 for vgg16."
