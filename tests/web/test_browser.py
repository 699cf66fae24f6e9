"""The pages in real headless Chromium (Debian's, driven by Playwright) on the offline
models: Explore, Attribute, Synthesize (live progress, previews, a queue with cancel) and
Stylize (the blend slider and the 4-style pad). Screenshots of each page go to
test-artifacts/web/ (`convscope.testing.artifact_dir`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from convscope.testing import artifact_dir, chromium, require_chromium, require_package

require_package("fastapi")

from convscope.web import ServerConfig  # noqa: E402
from convscope.web.testing import live_server  # noqa: E402

pytestmark = [pytest.mark.weights, pytest.mark.slow]

SHOTS = artifact_dir("web")
WAIT = 120_000  # ms: generous, for a loaded 2-core machine


@pytest.fixture(scope="module")
def site() -> Iterator[tuple[str, Any]]:
    require_chromium()
    config = ServerConfig(models=["efficientnet_lite0", "vgg16"], device="cpu")
    with live_server(config) as (url, _), chromium() as browser:
        yield url, browser


@pytest.fixture
def page(site: tuple[str, Any]) -> Iterator[Any]:
    url, browser = site
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, base_url=url)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    context.close()
    assert errors == []  # no script errors on any page


def _open(page: Any, name: str) -> None:
    page.goto(f"/{name}")
    page.wait_for_selector("body[data-ready=true]", timeout=WAIT)


def _photo(tmp_path: Path) -> Path:
    from convscope.data.images import save_png
    from convscope.data.samples import load_sample

    path = tmp_path / "my cat.png"
    save_png(load_sample("chelsea"), path)
    return path


def _watch_src(page: Any, selector: str) -> None:
    """Record every src the element gets, in window.__srcs[selector]."""
    page.evaluate(
        """(sel) => {
        window.__srcs = window.__srcs || {};
        const el = document.querySelector(sel);
        const seen = window.__srcs[sel] = [];
        new MutationObserver(() => seen.push(el.getAttribute('src')))
            .observe(el, {attributes: true, attributeFilter: ['src']});
    }""",
        selector,
    )


def _srcs(page: Any, selector: str) -> list[str]:
    return list(page.evaluate("(sel) => window.__srcs[sel]", selector))


def test_upload_see_the_predictions_switch_the_layer(page: Any, tmp_path: Path) -> None:
    _open(page, "explore")
    page.set_input_files("#upload", str(_photo(tmp_path)))
    page.wait_for_function(
        "document.querySelectorAll('#predictions li').length === 5", timeout=WAIT
    )
    top = page.inner_text("#predictions li:first-child")
    assert "cat" in top  # tiger cat / tabby / Egyptian cat
    assert page.inner_text("#current-label").startswith("my cat.png")
    page.wait_for_function("document.querySelector('#grid').dataset.layer", timeout=WAIT)
    first = page.get_attribute("#grid", "data-layer")
    first_src = page.get_attribute("#grid", "src")
    page.select_option("#layer", "block2")
    page.wait_for_function(
        "document.querySelector('#grid').dataset.layer === 'block2'", timeout=WAIT
    )
    assert page.get_attribute("#grid", "src") != first_src and first != "block2"
    assert "block2" in page.inner_text("#grid-caption")
    page.wait_for_function("document.querySelector('#grid').complete")
    box = page.locator("#grid").bounding_box()
    page.mouse.click(box["x"] + 3, box["y"] + 3)  # the first tile: channel 0
    page.wait_for_selector("#channel-view:not([hidden])", timeout=WAIT)
    assert page.inner_text("#channel-title") == "block2 · channel 0"
    page.wait_for_function("document.querySelector('#channel-overlay').complete")
    page.screenshot(path=str(SHOTS / "explore.png"), full_page=True)


def test_attribute_page_shows_maps_numbers_and_the_cutout(page: Any) -> None:
    _open(page, "attribute")
    page.select_option("#sample", "chelsea")
    page.wait_for_selector("#current:not([hidden])", timeout=WAIT)
    page.fill("#attr-steps", "8")
    page.click("#attr-run")
    page.wait_for_selector("#cutout:not([hidden])", timeout=WAIT)
    rows = page.locator("#faith tbody tr")
    assert rows.count() == 4  # three methods and the random baseline
    assert "random" in page.inner_text("#faith")
    assert "cat" in page.inner_text("#attr-status")
    page.wait_for_function("document.querySelector('#attr-panel').complete")
    page.screenshot(path=str(SHOTS / "attribute.png"), full_page=True)


def _start_style(page: Any, steps: int, size: int) -> None:
    page.select_option("#recipe", "style")
    page.fill("#k-steps", str(steps))
    page.fill("#k-size", str(size))
    page.click("#synth-run")


def test_a_short_style_transfer_streams_progress_and_previews(page: Any) -> None:
    _open(page, "synthesize")
    page.select_option("#recipe", "style")  # shows the content image picker
    page.select_option("#sample", "chelsea")
    page.wait_for_selector("#current:not([hidden])", timeout=WAIT)
    _watch_src(page, "#synth-preview")
    _start_style(page, steps=12, size=96)
    page.wait_for_selector("#synth-download:not([hidden])", timeout=WAIT)
    events = int(page.get_attribute("#synth-status", "data-events") or 0)
    assert events >= 3
    previews = [s for s in _srcs(page, "#synth-preview") if "preview.png" in s]
    assert len(set(previews)) >= 3  # the preview changed while it ran
    assert "/api/results/" in page.get_attribute("#synth-preview", "src")
    assert page.inner_text("#jobs li:first-child .state") == "done"
    page.screenshot(path=str(SHOTS / "synthesize.png"), full_page=True)


def test_cancel_a_run_and_the_next_queued_job_starts(page: Any) -> None:
    _open(page, "synthesize")
    page.select_option("#recipe", "style")  # shows the content image picker
    page.select_option("#sample", "chelsea")
    page.wait_for_selector("#current:not([hidden])", timeout=WAIT)
    _start_style(page, steps=2000, size=96)  # long: it will be cancelled
    page.wait_for_selector("#jobs li[data-state=running]", timeout=WAIT)
    _start_style(page, steps=4, size=64)
    page.wait_for_function(
        "document.querySelectorAll('#jobs li').length === 2 && "
        "document.querySelector('#jobs li:first-child').dataset.state === 'queued'",
        timeout=WAIT,
    )
    assert "place 1" in page.inner_text("#jobs li:first-child .state")
    page.screenshot(path=str(SHOTS / "synthesize-queue.png"), full_page=True)
    page.click("#jobs li[data-state=running] button.cancel")
    page.wait_for_selector("#jobs li:last-child[data-state=cancelled]", timeout=WAIT)
    page.wait_for_selector("#jobs li:first-child[data-state=done]", timeout=WAIT)


def test_the_blend_slider_and_the_pad_change_the_image(page: Any) -> None:
    _open(page, "stylize")
    page.select_option("#sample", "chelsea")
    page.wait_for_selector("#stylized:not([hidden])", timeout=WAIT)
    page.wait_for_function("document.querySelector('#stylized').dataset.weights", timeout=WAIT)
    before = page.get_attribute("#stylized", "src")
    assert page.get_attribute("#stylized", "data-weights") == "1.000,0.000,0.000,0.000"
    page.fill("#blend", "50")  # fires input
    page.wait_for_function(
        "document.querySelector('#stylized').dataset.weights === '0.500,0.500,0.000,0.000'",
        timeout=WAIT,
    )
    assert page.get_attribute("#stylized", "src") != before
    page.screenshot(path=str(SHOTS / "stylize.png"), full_page=True)
    page.check("input[name=blend-mode][value=pad]")
    box = page.locator("#pad").bounding_box()
    page.mouse.click(box["x"] + box["width"] - 2, box["y"] + box["height"] - 2)
    page.wait_for_function(  # the bottom-right corner: nearly all the fourth style
        "Number((document.querySelector('#stylized').dataset.weights || '0').split(',')[3]) > 0.9",
        timeout=WAIT,
    )
    page.screenshot(path=str(SHOTS / "stylize-pad.png"), full_page=True)
