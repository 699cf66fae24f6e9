"""The atlas's pages: HTML with inline CSS and JavaScript, no external asset, and only
relative links, so the folder opens from the filesystem (file://) or any static host.

- `index_html`: every layer's channels as cards (the feature visualization, the channel's
  strongest activation), each linking to its channel page; a link to the map.
- `channel_html`: one channel: its feature visualization, diverse images, top dataset
  patches with guided backprop, and its mean activation per class.
- `map_html`: the dataset's 2-D map; clicking an image shows its nearest neighbours.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from convscope.render.embedding import class_colors

__all__ = [
    "ChannelInfo",
    "ClassBar",
    "LayerInfo",
    "PatchInfo",
    "channel_html",
    "index_html",
    "map_html",
]

esc = html.escape


@dataclass(frozen=True)
class ClassBar:
    name: str
    count: int
    mean: float


@dataclass(frozen=True)
class PatchInfo:
    src: str  # the patch beside its guided backprop, relative to the layer's folder
    value: float  # the activation
    ident: str  # the image it comes from


@dataclass(frozen=True)
class ChannelInfo:
    channel: int
    page: str  # relative to the layer's folder: "c0003.html"
    image: str  # the feature visualization, relative to the layer's folder
    diverse: tuple[str, ...] = ()
    patches: tuple[PatchInfo, ...] = ()
    strongest: float | None = None  # the largest activation found in the dataset
    classes: tuple[ClassBar, ...] = ()


@dataclass(frozen=True)
class LayerInfo:
    name: str  # as given
    dotted: str
    folder: str  # relative to the atlas root: "layers/block10"
    width: int
    shape: tuple[int, ...]  # output shape at the synthesis size
    channels: tuple[ChannelInfo, ...] = field(default_factory=tuple)


_CSS = """
:root { color-scheme: dark; --bg:#111418; --card:#1b2027; --ink:#e8ecf1; --dim:#98a2b3;
        --accent:#7cc4ff; --line:#2b3440; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif;
       background: var(--bg); color: var(--ink); }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
header, main { max-width: 1200px; margin: 0 auto; padding: 0 2rem; }
header { padding-top: 2rem; padding-bottom: .5rem; }
header h1 { margin: 0; font-size: 2rem; letter-spacing: -.02em; }
header h1 span { color: var(--accent); }
header p { color: var(--dim); margin: .3rem 0 0; }
nav.crumbs { display:flex; gap: 1rem; flex-wrap: wrap; font-size: .9rem; margin-bottom: .6rem; }
nav.pills { display:flex; gap:.5rem; flex-wrap: wrap; margin: .8rem 0 0; }
nav.pills a { border: 1px solid var(--line); padding: .15rem .7rem; border-radius: 999px;
              font-size: .85rem; }
section { margin: 1.4rem 0; padding: 1.1rem 1.5rem; background: var(--card);
          border-radius: 14px; }
section h2 { margin: 0 0 .2rem; }
section h2 small { color: var(--dim); font-weight: 400; font-size: .9rem; }
section > p { color: var(--dim); margin: .2rem 0 .8rem; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr));
         gap: .8rem; }
.card { display: block; background: #12161b; border: 1px solid var(--line); border-radius: 10px;
        padding: .5rem; color: var(--ink); }
.card:hover { border-color: var(--accent); text-decoration: none; }
.card img { width: 100%; aspect-ratio: 1; object-fit: cover; border-radius: 6px;
            display: block; background: #000; }
.card span { display: block; font-size: .85rem; margin-top: .3rem; }
.card span.dim { color: var(--dim); font-size: .78rem; margin-top: 0; }
.hero { display: flex; gap: 1.2rem; flex-wrap: wrap; align-items: flex-start; }
.hero img.big { width: 288px; height: 288px; border-radius: 10px; background: #000; }
.diverse { display: grid; grid-template-columns: repeat(auto-fill, minmax(136px, 1fr));
           gap: .6rem; flex: 1; min-width: 280px; }
.diverse img { width: 100%; aspect-ratio: 1; border-radius: 8px; background: #000; }
.patches { display: grid; grid-template-columns: repeat(auto-fill, minmax(264px, 1fr));
            gap: .8rem; }
.patches figure { margin: 0; }
.patches img { width: 100%; height: auto; border-radius: 6px; image-rendering: pixelated;
               background: #000; }
.patches figcaption { color: var(--dim); font-size: .78rem; word-break: break-all; }
.bars { display: grid; grid-template-columns: minmax(6rem, max-content) 1fr 5.5rem;
        gap: .25rem .8rem; align-items: center; font-size: .85rem; }
.bars .bar { position: relative; height: .9rem; background: #0d1014; border-radius: 3px;
              overflow: hidden; }
.bars .bar i { position: absolute; top: 0; bottom: 0; background: var(--accent); }
.bars .bar i.neg { background: #ff9e7c; }
.bars .num { color: var(--dim); text-align: right; font-variant-numeric: tabular-nums; }
footer { color: var(--dim); text-align: center; padding: 2rem; font-size: .8rem; }
"""


def _page(title: str, body: str, *, css: str = _CSS) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>\n"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
        f"<title>{esc(title)}</title><style>{css}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def _number(v: float | None) -> str:
    return "—" if v is None else f"{v:.3g}"


def index_html(
    *,
    title: str,
    subtitle: str,
    layers: Sequence[LayerInfo],
    has_map: bool,
    footer: str = "",
) -> str:
    """The atlas's front page."""
    pills = [
        f"<a href='#{esc(layer.folder.rsplit('/', 1)[-1])}'>{esc(layer.name)}</a>"
        for layer in layers
    ]
    if has_map:
        pills.insert(0, "<a href='map.html'>Map of the dataset</a>")
    parts = [
        "<header>",
        f"<h1><span>convscope</span> atlas · {esc(title)}</h1>",
        f"<p>{esc(subtitle)}</p>",
        f"<nav class='pills'>{''.join(pills)}</nav>",
        "</header><main>",
    ]
    for layer in layers:
        anchor = layer.folder.rsplit("/", 1)[-1]
        dotted = f"{layer.dotted} · " if layer.dotted != layer.name else ""
        shown = len(layer.channels)
        parts.append(
            f"<section id='{esc(anchor)}'><h2>{esc(layer.name)} <small>{esc(dotted)}"
            f"{layer.width} channels, {shown} shown · output "
            f"{esc('×'.join(str(d) for d in layer.shape[1:]))} at the images' size</small></h2>"
            "<p>Each image is the input that excites the channel most (Olah et al. 2017's "
            "Fourier parameterization and transforms). Open a channel for its diverse images, "
            "the dataset patches that excite it most and its mean activation per class.</p>"
            "<div class='cards'>"
        )
        for ch in layer.channels:
            base = f"{layer.folder}/"
            parts.append(
                f"<a class='card' href='{esc(base + ch.page)}'>"
                f"<img src='{esc(base + ch.image)}' alt='channel {ch.channel}' loading='lazy'>"
                f"<span>channel {ch.channel}</span>"
                f"<span class='dim'>strongest in data {_number(ch.strongest)}</span></a>"
            )
        parts.append("</div></section>")
    parts.append(f"</main><footer>{esc(footer)}</footer>")
    return _page(f"atlas · {title}", "\n".join(parts))


def _bars(bars: Sequence[ClassBar], limit: int = 20) -> tuple[str, str]:
    """The class-means chart (HTML bars) and a note when only the strongest are shown."""
    shown = list(bars)
    note = ""
    if len(shown) > limit:
        nan_last = float("inf")  # a class without images has a NaN mean
        shown = sorted(shown, key=lambda b: -b.mean if b.mean == b.mean else nan_last)[:limit]
        note = f" The {limit} strongest of {len(bars)} classes."
    finite = [b.mean for b in shown if b.mean == b.mean]
    lo, hi = min([0.0, *finite]), max([0.0, *finite])
    span = (hi - lo) or 1.0
    zero = 100 * -lo / span  # where 0 sits on the bar, in %: bars grow from it either way
    rows = []
    for b in shown:
        if b.mean != b.mean:  # no image of this class
            left, width, cls, num = zero, 0.0, "", "—"
        else:
            width = 100 * abs(b.mean) / span
            left = zero - width if b.mean < 0 else zero
            cls, num = (" class='neg'" if b.mean < 0 else ""), f"{b.mean:.3g}"
        rows.append(
            f"<span title='{b.count} images'>{esc(b.name)}</span>"
            f"<div class='bar'><i{cls} style='left:{left:.1f}%;width:{width:.1f}%'></i></div>"
            f"<span class='num'>{num}</span>"
        )
    return "<div class='bars'>" + "".join(rows) + "</div>", note


def channel_html(
    *,
    model: str,
    dataset: str,
    layer: LayerInfo,
    position: int,
    k: int,
    images: int,
) -> str:
    """The page of `layer.channels[position]`, with links to its neighbours in the layer."""
    ch = layer.channels[position]
    prev = layer.channels[position - 1] if position > 0 else None
    nxt = layer.channels[position + 1] if position + 1 < len(layer.channels) else None
    crumbs = ["<a href='../../index.html'>← atlas</a>"]
    if prev is not None:
        crumbs.append(f"<a href='{esc(prev.page)}' rel='prev'>← channel {prev.channel}</a>")
    if nxt is not None:
        crumbs.append(f"<a href='{esc(nxt.page)}' rel='next'>channel {nxt.channel} →</a>")
    parts = [
        "<header>",
        f"<nav class='crumbs'>{''.join(crumbs)}</nav>",
        f"<h1>{esc(layer.name)} · channel {ch.channel}</h1>",
        f"<p>{esc(model)} · {layer.width} channels in this layer · strongest activation in "
        f"{esc(dataset)}: {_number(ch.strongest)}</p>",
        "</header><main>",
        "<section id='visualization'><h2>Feature visualization</h2>",
        "<p>The image that excites this channel most, found by gradient ascent on the pixels "
        "(lucid preset). Beside it, images optimized together with a diversity term that "
        "pushes them apart: one channel can respond to several different things.</p>",
        "<div class='hero'>",
        f"<img class='big' src='{esc(ch.image)}' alt='feature visualization'>",
    ]
    if ch.diverse:
        parts.append("<div class='diverse'>")
        parts += [
            f"<img src='{esc(src)}' alt='diverse image {j}'>" for j, src in enumerate(ch.diverse)
        ]
        parts.append("</div>")
    parts.append("</div></section>")
    if ch.patches:
        parts.append(
            f"<section id='patches'><h2>Top {len(ch.patches)} dataset patches</h2>"
            f"<p>The places in {esc(dataset)} ({images} images) where this channel fires most, "
            "one per image: each patch is the unit's exact receptive field (the part beyond "
            "the image's border hatched), and beside it guided backprop shows which of its "
            "pixels drive the unit (gray: no effect).</p><div class='patches'>"
        )
        for p in ch.patches:
            parts.append(
                f"<figure><img src='{esc(p.src)}' alt='patch and guided backprop'>"
                f"<figcaption>{p.value:.3g} · {esc(p.ident)}</figcaption></figure>"
            )
        parts.append("</div></section>")
    parts.append("<section id='classes'><h2>Mean activation per class</h2>")
    if ch.classes:
        chart, note = _bars(ch.classes)
        parts.append(
            "<p>The channel's activation averaged over each image's positions, then over the "
            f"images of each class.{esc(note)}</p>{chart}"
        )
    else:
        parts.append(f"<p>{esc(dataset)} has no labels, so there are no classes to compare.</p>")
    parts.append("</section></main>")
    return _page(f"{layer.name} · channel {ch.channel}", "\n".join(parts))


_MAP_CSS = """
:root { color-scheme: dark; }
html, body { margin: 0; height: 100%; background: #111418; color: #e8ecf1;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; }
a { color: #7cc4ff; text-decoration: none; }
#wrap { display: flex; height: 100vh; }
#view { flex: 1; position: relative; overflow: hidden; cursor: grab; background: #0c0f12; }
#view.drag { cursor: grabbing; }
#layer { position: absolute; inset: 0; }
.pt { position: absolute; border-radius: 2px; box-sizing: border-box; cursor: pointer;
      background-repeat: no-repeat; background-color: #000; }
.pt.dim { opacity: .22; }
.pt.nb { outline: 2px solid #7cc4ff; z-index: 2; opacity: 1; }
.pt.sel { outline: 3px solid #fff; z-index: 3; opacity: 1; }
#panel { width: 340px; padding: 14px 16px; background: #1b2027; overflow-y: auto; }
#panel h1 { font-size: 17px; margin: 4px 0 2px; }
#panel p { color: #98a2b3; margin: 4px 0; }
#chosen .big { width: 160px; height: 160px; border-radius: 8px; margin-top: 8px; }
button { background: #12161b; color: #e8ecf1; border: 1px solid #2b3440; border-radius: 999px;
         padding: .2rem .8rem; cursor: pointer; font: inherit; }
.thumb { background-repeat: no-repeat; image-rendering: pixelated; background-color: #000; }
#nbs { display: grid; grid-template-columns: repeat(3, 1fr); gap: 8px; margin-top: 6px; }
#nbs div { cursor: pointer; font-size: 11px; color: #98a2b3; word-break: break-all; }
#nbs .thumb { width: 96px; height: 96px; border-radius: 6px; }
#legend span { display: inline-block; width: 10px; height: 10px; border-radius: 2px;
               margin: 0 4px 0 8px; }
"""

_MAP_SCRIPT = r"""
"use strict";
const D = JSON.parse(document.getElementById("atlas-map").textContent);
const N = D.count, T = D.thumb, colors = D.colors;
const view = document.getElementById("view"), layer = document.getElementById("layer");
function sheetSize(k) {
  const count = Math.min(D.perSheet, N - k * D.perSheet);
  return [Math.min(D.perRow, count) * T, Math.ceil(count / D.perRow) * T];
}
function sprite(el, i, side) {
  // Thumbnail i of the sprite sheets as the background of `el`, drawn `side` pixels wide.
  const k = Math.floor(i / D.perSheet), j = i % D.perSheet, s = side / T;
  const [w, h] = sheetSize(k);
  el.style.backgroundImage = "url('map/" + D.sheets[k] + "')";
  el.style.backgroundSize = (w * s) + "px " + (h * s) + "px";
  el.style.backgroundPosition = (-(j % D.perRow) * side) + "px " +
    (-Math.floor(j / D.perRow) * side) + "px";
}
let grid = false, S = 0, scale = 1, ox = 0, oy = 0, pending = false;
const pts = [];
for (let i = 0; i < N; i++) {
  const el = document.createElement("div");
  el.className = "pt";
  el.dataset.i = String(i);
  el.title = D.idents[i] + (D.names[i] ? " — " + D.names[i] : "");
  if (D.labels[i] >= 0 && colors.length)
    el.style.borderBottom = "3px solid " + colors[D.labels[i] % colors.length];
  pts.push(el);
  layer.appendChild(el);
}
function draw() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => { pending = false; render(); });
}
function render() {
  // Positions grow with the zoom; scattered thumbnails grow more slowly, so that zooming in
  // pulls a crowded cluster apart. On the grid, each image fills its cell.
  const X = grid ? D.gx : D.x, Y = grid ? D.gy : D.y;
  const base = Math.max(10, Math.min(64, 1.1 * S / Math.sqrt(N)));
  const t = Math.round(grid ? Math.max(4, S * scale / D.gridSide - 2)
                            : Math.min(192, base * Math.sqrt(scale)));
  for (let i = 0; i < N; i++) {
    const el = pts[i];
    el.style.width = el.style.height = t + "px";
    el.style.left = Math.round(ox + X[i] * S * scale - t / 2) + "px";
    el.style.top = Math.round(oy + Y[i] * S * scale - t / 2) + "px";
    if (el.dataset.side !== String(t)) { sprite(el, i, t); el.dataset.side = String(t); }
  }
}
function fit() {
  S = Math.min(view.clientWidth, view.clientHeight) * 0.9;
  scale = 1;
  ox = (view.clientWidth - S) / 2; oy = (view.clientHeight - S) / 2;
  draw();
}
function select(i) {
  for (const el of pts) el.classList.remove("sel", "nb", "dim");
  const chosen = document.getElementById("chosen"), nbs = document.getElementById("nbs");
  nbs.textContent = "";
  chosen.textContent = "";
  if (!(i >= 0 && i < N)) {
    const p = document.createElement("p");
    p.textContent = "Click an image on the map to see its nearest neighbours in the " +
      "model's feature space.";
    chosen.appendChild(p);
    return;
  }
  const near = new Set(D.neighbors[i]);
  pts.forEach((el, j) => el.classList.add(j === i ? "sel" : near.has(j) ? "nb" : "dim"));
  const big = document.createElement("div");
  big.className = "thumb big";
  sprite(big, i, 160);
  const name = document.createElement("p");
  name.id = "chosen-name";
  name.textContent = D.idents[i] + (D.names[i] ? " — " + D.names[i] : "");
  const head = document.createElement("p");
  head.textContent = "Its " + D.neighbors[i].length + " nearest neighbours (L2 distance " +
    "between the pooled features):";
  chosen.append(big, name, head);
  D.neighbors[i].forEach((j, r) => {
    const cell = document.createElement("div");
    cell.className = "nb-cell";
    const t = document.createElement("div");
    t.className = "thumb";
    sprite(t, j, 96);
    cell.append(t, document.createTextNode(
      (D.names[j] ? D.names[j] + " · " : "") + "d " + D.distances[i][r]));
    cell.title = D.idents[j];
    cell.onclick = () => { location.hash = "i=" + j; };
    nbs.appendChild(cell);
  });
}
function fromHash() {
  const m = /i=(\d+)/.exec(location.hash);
  select(m ? parseInt(m[1], 10) : -1);
}
let drag = null, moved = false;
view.addEventListener("mousedown", e => {
  drag = [e.clientX, e.clientY, ox, oy]; moved = false; view.classList.add("drag");
  e.preventDefault();
});
window.addEventListener("mousemove", e => {
  if (!drag) return;
  const dx = e.clientX - drag[0], dy = e.clientY - drag[1];
  if (Math.abs(dx) + Math.abs(dy) > 3) moved = true;
  ox = drag[2] + dx; oy = drag[3] + dy; draw();
});
window.addEventListener("mouseup", e => {
  if (!drag) return;
  view.classList.remove("drag");
  drag = null;
  if (moved) return;
  const el = e.target.closest ? e.target.closest(".pt") : null;
  if (el) location.hash = "i=" + el.dataset.i;
});
view.addEventListener("wheel", e => {
  e.preventDefault();
  const f = Math.exp(-e.deltaY * (e.deltaMode === 1 ? 0.05 : 0.0015));
  const ns = Math.min(Math.max(scale * f, 0.3), 60), k = ns / scale;
  const r = view.getBoundingClientRect(), mx = e.clientX - r.left, my = e.clientY - r.top;
  ox = mx - (mx - ox) * k; oy = my - (my - oy) * k; scale = ns; draw();
}, { passive: false });
view.addEventListener("dblclick", fit);
const toggle = document.getElementById("grid");
toggle.onclick = () => {
  grid = !grid;
  toggle.textContent = grid ? "Scatter as the map places them" : "Snap to a grid";
  draw();
};
window.addEventListener("hashchange", fromHash);
window.addEventListener("resize", fit);
const legend = document.getElementById("legend");
if (D.classes && colors.length) {
  D.classes.forEach((c, k) => {
    const sw = document.createElement("span");
    sw.style.background = colors[k % colors.length];
    legend.append(sw, document.createTextNode(c));
  });
}
fit(); fromHash();
"""


def map_html(data: dict[str, Any], *, title: str, subtitle: str) -> str:
    """The map page for the data that `build_map` wrote (`map/map.json`)."""
    classes = data.get("classes") or []
    colors = (
        [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in class_colors(len(classes))] if classes else []
    )
    payload = json.dumps({**data, "colors": colors}, ensure_ascii=True, separators=(",", ":"))
    payload = payload.replace("</", "<\\/")
    shown = (
        f"{data['count']} of {data['of']} images"
        if data["count"] < data["of"]
        else (f"{data['count']} images")
    )
    body = (
        "<div id='wrap'><div id='view'><div id='layer'></div></div>"
        "<aside id='panel'><a href='index.html'>← atlas</a>"
        f"<h1>{esc(title)}</h1><p>{esc(subtitle)} · {esc(shown)}</p>"
        "<p>wheel: zoom · drag: pan · double-click: fit · click an image: its neighbours</p>"
        "<p><button id='grid' type='button'>Snap to a grid</button></p>"
        "<p id='legend'></p><div id='chosen'></div><div id='nbs'></div></aside></div>\n"
        f"<script type='application/json' id='atlas-map'>{payload}</script>\n"
        f"<script>{_MAP_SCRIPT}</script>"
    )
    return _page(title, body, css=_MAP_CSS)
