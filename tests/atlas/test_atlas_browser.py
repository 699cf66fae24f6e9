"""The atlas in a real browser, opened from the filesystem (file://): the front page, a
channel page and back, and the map, where a click shows an image's neighbours. Screenshots go
to `artifact_dir("atlas")`."""

from __future__ import annotations

import json
from pathlib import Path

from convscope.testing import artifact_dir, chromium, require_chromium


def test_the_site_works_from_the_filesystem(built: Path) -> None:
    require_chromium()
    shots = artifact_dir("atlas")
    index = (built / "index.html").resolve().as_uri()
    data = json.loads((built / "map" / "map.json").read_text())
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        failed: list[str] = []
        page.on("requestfailed", lambda r: failed.append(r.url))
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(index)
        assert "atlas · tiny" in page.inner_text("h1")
        assert page.locator("a.card").count() == 6
        page.screenshot(path=str(shots / "index.png"), full_page=True)

        page.locator("a.card", has_text="channel 1").first.click()
        page.wait_for_url("**/layers/relu1/c0001.html")
        assert page.inner_text("h1") == "relu1 · channel 1"
        images = page.locator("img")
        assert images.count() == 1 + 2 + 3  # visualization, diverse images, patches
        loaded = page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth)")
        assert loaded
        assert page.locator(".bars span", has_text="a").count() >= 1  # the class means
        page.screenshot(path=str(shots / "channel.png"), full_page=True)
        page.click("text=channel 2 →")
        page.wait_for_url("**/c0002.html")
        page.go_back()
        page.go_back()
        page.wait_for_url("**/index.html")
        assert page.locator("a.card").count() == 6

        page.click("text=Map of the dataset")
        page.wait_for_url("**/map.html")
        points = page.locator(".pt")
        assert points.count() == data["count"]
        points.nth(5).click()
        page.wait_for_function("document.querySelectorAll('#nbs .nb-cell').length > 0")
        cells = page.locator("#nbs .nb-cell")
        assert cells.count() == len(data["neighbors"][5])
        assert page.locator(".pt.nb").count() == len(data["neighbors"][5])
        assert page.inner_text("#chosen-name").startswith(data["idents"][5])
        page.screenshot(path=str(shots / "map.png"))
        cells.first.click()  # a neighbour becomes the chosen image
        first = data["neighbors"][5][0]
        page.wait_for_function(f"location.hash === '#i={first}'")
        page.click("#grid")  # one image per cell
        page.screenshot(path=str(shots / "map_grid.png"))
        assert errors == [] and failed == []
