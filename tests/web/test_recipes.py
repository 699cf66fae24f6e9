"""Every synthesis recipe through the web API on the offline models, at small sizes: each
answers an image with its recipe, and streams previews while it runs."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from convscope.testing import require_package

require_package("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from convscope.web import ServerConfig, create_app  # noqa: E402

pytestmark = [pytest.mark.weights, pytest.mark.slow]

CASES = [
    ("visualize", "efficientnet_lite0", {"target": "flamingo", "steps": 6, "size": 64}),
    ("visualize", "efficientnet_lite0", {"layer": "block3", "channel": 2, "steps": 6, "size": 64}),
    ("adversarial", "efficientnet_lite0", {"target": 130, "steps": 4}),
    ("invert", "vgg16", {"layer": "relu2_2", "steps": 4, "size": 64}),
    ("dream", "vgg16", {"layer": "relu3_3", "steps": 2, "octaves": 2, "size": 96}),
    ("texture", "vgg16", {"steps": 4, "size": 64}),
    ("style", "vgg16", {"steps": 4, "size": 64, "style_weight": 50.0}),
]


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app = create_app(ServerConfig(models=["efficientnet_lite0", "vgg16"], device="cpu"))
    with TestClient(app) as c:
        yield c


@pytest.mark.parametrize(("recipe", "model", "params"), CASES)
def test_each_recipe_runs_with_previews_and_keeps_its_recipe(
    client: TestClient, recipe: str, model: str, params: dict[str, Any]
) -> None:
    image = client.post("/api/samples/chelsea").json()["id"]
    style = client.post("/api/samples/brick").json()["id"]
    body = {
        "kind": "synthesize",
        "recipe": recipe,
        "model": model,
        "image": image,
        "style": style,
        "params": params,
    }
    r = client.post("/api/jobs?wait=true", json={"job": body})
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["state"] == "done" and job["events"] >= 2 and job["previews"] >= 1
    png = client.get(f"/api/results/{job['result']['image']}.png?download=1")
    saved = json.loads(Image.open(io.BytesIO(png.content)).text["convscope"])
    assert saved["recipe"] == recipe and saved["model"] == model
    assert saved["params"]["steps"] == params["steps"]
    assert saved["made_by"] == "convscope serve"


def test_a_visualization_needs_a_target(client: TestClient) -> None:
    body = {"kind": "synthesize", "recipe": "visualize", "model": "efficientnet_lite0"}
    r = client.post("/api/jobs?wait=true", json={"job": body | {"params": {"steps": 2}}})
    assert r.status_code == 400 and "give exactly one of" in r.json()["error"]
