"""The README's screenshots of `convscope serve`: a live server on loopback driven by headless
Chromium (Debian's, through Playwright), as the browser tests drive it.

    python docs/web_screenshots.py [--content tubingen.jpg] [--style starry_night.jpg] \\
        [--out docs/images]

Without --content and --style it uses the bundled samples (chelsea, and brick).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from PIL import Image

from convscope.testing import chromium
from convscope.web import ServerConfig
from convscope.web.testing import live_server

WAIT = 300_000  # ms


def _shot(page: Any, path: Path, width: int = 1100) -> None:
    """A screenshot of the page's content (down to its last element), `width` wide."""
    height = int(page.evaluate("document.querySelector('main').getBoundingClientRect().bottom"))
    page.screenshot(path=str(path), clip={"x": 0, "y": 0, "width": 1280, "height": height + 8})
    with Image.open(path) as im:
        scale = width / im.width
        small = im.convert("RGB").resize((width, round(im.height * scale)), Image.LANCZOS)
    small.save(path, optimize=True)


def _pick(page: Any, picker: str, upload: str, path: Path | None, sample: str) -> None:
    if path is None:
        page.select_option(picker, sample)
    else:
        page.set_input_files(upload, str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--content", type=Path)
    parser.add_argument("--style", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args()
    config = ServerConfig(models=["efficientnet_lite0", "vgg16"], device="cpu")
    with live_server(config) as (url, _), chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900}, base_url=url)

        page.goto("/explore")
        page.wait_for_selector("body[data-ready=true]")
        page.select_option("#sample", "chelsea")
        page.wait_for_selector("#predictions li", timeout=WAIT)
        page.select_option("#layer", "block2")
        page.wait_for_function("document.querySelector('#grid').dataset.layer === 'block2'")
        page.wait_for_function("document.querySelector('#grid').complete")
        box = page.locator("#grid").bounding_box()
        page.mouse.click(box["x"] + 5.5 * box["width"] / 8, box["y"] + 5)  # channel 5
        page.wait_for_selector("#channel-view:not([hidden])", timeout=WAIT)
        page.wait_for_function("document.querySelector('#channel-overlay').complete")
        _shot(page, args.out / "web_explore.png")

        page.goto("/synthesize")
        page.wait_for_selector("body[data-ready=true]")
        page.select_option("#recipe", "style")
        _pick(page, "#sample", "#upload", args.content, "chelsea")
        page.wait_for_selector("#current:not([hidden])", timeout=WAIT)
        if args.style is not None:
            page.set_input_files("#style-upload", str(args.style))
        page.wait_for_function("document.querySelector('#style-thumb').complete")
        page.fill("#k-steps", "60")
        page.fill("#k-size", "256")
        page.click("#synth-run")
        page.wait_for_function(
            "Number(document.querySelector('#synth-preview').dataset.version) >= 12", timeout=WAIT
        )
        page.fill("#k-steps", "200")
        page.click("#synth-run")  # a second run waits behind the first
        page.wait_for_selector("#jobs li[data-state=queued]", timeout=WAIT)
        page.wait_for_timeout(500)
        _shot(page, args.out / "web_synthesize.png")
        page.click("#jobs li[data-state=queued] button.cancel")
        page.wait_for_selector("#jobs li[data-state=running] button.cancel", timeout=WAIT)
        page.click("#jobs li[data-state=running] button.cancel")

        page.goto("/stylize")
        page.wait_for_selector("body[data-ready=true]")
        page.wait_for_selector("#stylized:not([hidden])", timeout=WAIT)
        page.check("input[name=blend-mode][value=pad]")
        box = page.locator("#pad").bounding_box()
        page.mouse.click(box["x"] + 0.7 * box["width"], box["y"] + 0.35 * box["height"])
        page.wait_for_function(
            "Number((document.querySelector('#stylized').dataset.weights || '1').split(',')[0])"
            " < 0.5",
            timeout=WAIT,
        )
        page.wait_for_timeout(300)
        _shot(page, args.out / "web_stylize.png")
    for name in ("web_explore", "web_synthesize", "web_stylize"):
        print(args.out / f"{name}.png")


if __name__ == "__main__":
    main()
