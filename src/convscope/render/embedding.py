"""Pictures of 2-D maps of feature space: every image drawn at its place in the map.

`embedding_image` makes a PNG-ready picture (as in the well-known t-SNE figures of MNIST and
ImageNet: each thumbnail where its features put it, or snapped to a grid); `embedding_html`
makes one self-contained HTML page with a zoomable, pannable canvas (dots when zoomed out,
thumbnails when zoomed in, the image's name and label on hover) that copes with 100k points.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw
from torch import Tensor

from convscope.data.images import to_pil
from convscope.errors import UserInputError
from convscope.render.grids import ink_for, text_font

__all__ = ["class_colors", "embedding_html", "embedding_image", "thumbnail_size"]

Color = tuple[int, int, int]
Thumbs = Tensor | Sequence[Tensor] | Sequence[Image.Image]

_UNLABELLED: Color = (150, 150, 150)
_SHEET = 4096  # sprite sheets are at most this many pixels on a side
_SPRITE_BUDGET = 16_000_000  # total thumbnail pixels embedded in one HTML page


def class_colors(n: int) -> list[Color]:
    """`n` distinct colours: matplotlib's tab10 / tab20, then evenly spaced hues."""
    import colorsys

    import matplotlib

    if n <= 10:
        base = matplotlib.colormaps["tab10"].colors  # type: ignore[attr-defined]
    elif n <= 20:
        base = matplotlib.colormaps["tab20"].colors  # type: ignore[attr-defined]
    else:
        base = [colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.65, 0.9) for i in range(n)]
    return [(round(r * 255), round(g * 255), round(b * 255)) for r, g, b in list(base)[:n]]


def _label_array(labels: Sequence[int] | Tensor | NDArray[Any] | None, n: int) -> NDArray[Any]:
    if labels is None:
        return np.full(n, -1, dtype=np.int64)
    arr = np.asarray(labels.cpu().numpy() if isinstance(labels, Tensor) else labels)
    arr = arr.astype(np.int64).ravel()
    if len(arr) != n:
        raise UserInputError(f"got {len(arr)} labels for {n} points; they must match.")
    return arr


def _positions(xy: Any) -> NDArray[np.float64]:
    pts = np.asarray(xy.detach().cpu().numpy() if isinstance(xy, Tensor) else xy, np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise UserInputError(f"positions must have shape (N, 2), got {tuple(pts.shape)}.")
    if len(pts) == 0:
        raise UserInputError("a map needs at least one point.")
    if not np.isfinite(pts).all():
        raise UserInputError("positions contain NaN or infinite values.")
    return pts


def _thumb_pil(t: Tensor | Image.Image, k: int) -> Image.Image:
    if isinstance(t, Image.Image):
        return t.convert("RGB")
    if not isinstance(t, Tensor):
        raise UserInputError(
            f"thumbnail {k} must be a tensor or PIL image, not {type(t).__name__}."
        )
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise UserInputError(f"thumbnail {k} must have shape (3, h, w), got {tuple(t.shape)}.")
    return to_pil(t).convert("RGB")


def _thumbs(thumbnails: Thumbs, n: int) -> list[Tensor | Image.Image]:
    if isinstance(thumbnails, Tensor):
        if thumbnails.dim() != 4:
            raise UserInputError(
                f"thumbnails must have shape (N, 3, h, w), got {tuple(thumbnails.shape)}."
            )
        seq: list[Tensor | Image.Image] = list(thumbnails.unbind(0))
    else:
        seq = list(thumbnails)
    if len(seq) != n:
        raise UserInputError(f"got {len(seq)} thumbnails for {n} points; they must match.")
    return seq


def _fit(im: Image.Image, tile: int) -> Image.Image:
    """`im` scaled to fit tile×tile. Small images grow by a whole factor with nearest-neighbour
    sampling (crisp, equal pixels); large ones shrink with Lanczos filtering."""
    w, h = im.size
    s = tile / max(w, h)
    if s >= 1:
        k = math.floor(s)
        return im if k == 1 else im.resize((w * k, h * k), Image.Resampling.NEAREST)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return im.resize(size, Image.Resampling.LANCZOS)


def _bordered(im: Image.Image, color: Color | None, width: int) -> Image.Image:
    if color is None or width <= 0:
        return im
    out = im.copy()
    ImageDraw.Draw(out).rectangle((0, 0, out.width - 1, out.height - 1), outline=color, width=width)
    return out


def thumbnail_size(n: int, size: int, *, grid: bool = False) -> int:
    """The thumbnail side for `n` images on a `size`-pixel map."""
    if grid:
        return max(2, size // max(1, math.ceil(math.sqrt(n))))
    return int(min(96, max(8, 1.15 * size / math.sqrt(max(1, n)))))


def embedding_image(
    xy: NDArray[Any] | Tensor,
    thumbnails: Thumbs,
    *,
    size: int = 2000,
    grid: bool = False,
    labels: Sequence[int] | Tensor | NDArray[Any] | None = None,
    classes: Sequence[str] | None = None,
    tile: int | None = None,
    background: Color = (255, 255, 255),
) -> Image.Image:
    """Draw each thumbnail at its 2-D position: an RGB image about `size` pixels wide.

    `xy` (N, 2): map positions (any scale; x right, y down), or with `grid=True` integer cells
    (column, row) from `grid_snap`, one thumbnail per cell. `thumbnails`: (N, 3, h, w) floats
    in [0, 1] (or uint8), or a list of such tensors or of PIL images. With `labels` (−1 = none)
    each thumbnail gets a border in its class colour, and `classes` adds a legend.
    """
    pts = _positions(xy)
    n = len(pts)
    thumbs = _thumbs(thumbnails, n)
    lab = _label_array(labels, n)
    if size < 16:
        raise UserInputError(f"size must be at least 16 pixels, got {size}.")
    colors = class_colors(max(int(lab.max()) + 1, len(classes or ()), 1))
    margin = max(8, size // 60)
    if grid:
        cells = np.rint(pts).astype(np.int64)
        if (cells < 0).any():
            raise UserInputError("grid cells must be non-negative (column, row) integers.")
        if len({(int(c), int(r)) for c, r in cells}) != n:
            raise UserInputError("two points share a grid cell; snap them with grid_snap first.")
        cols, rows = int(cells[:, 0].max()) + 1, int(cells[:, 1].max()) + 1
        t = tile or max(2, (size - 2 * margin) // max(cols, rows))
        width, height = cols * t + 2 * margin, rows * t + 2 * margin
        origins = cells * t + margin  # (N, 2) top-left corners
        inner = t - max(1, t // 16) if t >= 8 else t  # a hairline gap between cells
    else:
        t = tile or thumbnail_size(n, size)
        lo = pts.min(axis=0)
        span = float(np.ptp(pts, axis=0).max()) or 1.0
        scale = (size - 2 * margin - t) / span
        extent = np.ptp(pts, axis=0) * scale
        width = math.ceil(extent[0]) + t + 2 * margin
        height = math.ceil(extent[1]) + t + 2 * margin
        origins = np.rint((pts - lo) * scale).astype(np.int64) + margin
        inner = t
    legend_h = 0
    font = text_font(max(12, min(28, size // 70)))
    if classes is not None and (lab >= 0).any():
        legend_h = int(getattr(font, "size", 12)) + 16
    canvas = Image.new("RGB", (width, height + legend_h), background)
    bw = max(1, inner // 14) if (lab >= 0).any() else 0
    for k in range(n):
        pic = _fit(_thumb_pil(thumbs[k], k), inner)
        color = colors[lab[k]] if lab[k] >= 0 else (None if bw == 0 else _UNLABELLED)
        pic = _bordered(pic, color, bw)
        ox, oy = int(origins[k, 0]), int(origins[k, 1])
        canvas.paste(pic, (ox + (inner - pic.width) // 2, oy + (inner - pic.height) // 2))
    if legend_h:
        _legend(canvas, list(classes or ()), colors, lab, height, legend_h, font, background)
    return canvas


def _legend(
    canvas: Image.Image,
    classes: list[str],
    colors: list[Color],
    lab: NDArray[Any],
    top: int,
    h: int,
    font: Any,
    background: Color,
) -> None:
    draw = ImageDraw.Draw(canvas)
    present = sorted({int(v) for v in lab if v >= 0})
    sw = h // 2
    x = 12
    ink = ink_for(background)
    for c in present:
        name = classes[c] if c < len(classes) else str(c)
        draw.rectangle((x, top + (h - sw) // 2, x + sw, top + (h + sw) // 2), fill=colors[c])
        x += sw + 6
        draw.text((x, top + h // 2), name, fill=ink, font=font, anchor="lm")
        x += int(font.getlength(name)) + 18
        if x > canvas.width - 40:
            break


# ---- HTML ------------------------------------------------------------------------------------


def _sprite_sheets(thumbs: list[Tensor | Image.Image], t: int) -> tuple[list[str], int]:
    """Pack thumbnails (t×t each) into sprite sheets; return data URIs and tiles per row."""
    per_row = max(1, _SHEET // t)
    per_sheet = per_row * per_row
    n = len(thumbs)
    lossless = n * t * t <= 4_000_000
    sheets = []
    for start in range(0, n, per_sheet):
        count = min(per_sheet, n - start)
        rows = math.ceil(count / per_row)
        cols = min(per_row, count)
        sheet = Image.new("RGB", (cols * t, rows * t), (0, 0, 0))
        for j in range(count):
            pic = _fit(_thumb_pil(thumbs[start + j], start + j), t)
            r, c = divmod(j, per_row)
            sheet.paste(pic, (c * t + (t - pic.width) // 2, r * t + (t - pic.height) // 2))
        buf = io.BytesIO()
        if lossless:
            sheet.save(buf, format="PNG", optimize=True)
            mime = "image/png"
        else:
            sheet.save(buf, format="JPEG", quality=85)
            mime = "image/jpeg"
        sheets.append(f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii"))
    return sheets, per_row


def embedding_html(
    xy: NDArray[Any] | Tensor,
    thumbnails: Thumbs,
    labels: Sequence[int] | Tensor | NDArray[Any] | None,
    *,
    title: str,
    idents: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    subtitle: str = "",
) -> str:
    """One self-contained HTML page: the map on a canvas with mouse-wheel zoom and drag pan.

    Zoomed out it draws a dot per image in its class colour; zoomed in, the thumbnails
    (embedded as base64 sprite sheets). Hovering shows the image, its name (`idents`) and
    label. No external assets: the page works offline, from a file. For 100k images the
    thumbnails are small (about 12 px) so that the page stays a reasonable size.
    """
    pts = _positions(xy)
    n = len(pts)
    thumbs = _thumbs(thumbnails, n)
    lab = _label_array(labels, n)
    if idents is not None and len(idents) != n:
        raise UserInputError(f"got {len(idents)} names for {n} points; they must match.")
    lo = pts.min(axis=0)
    span = float(np.ptp(pts, axis=0).max()) or 1.0
    unit = (pts - lo) / span  # (N, 2) in [0, 1], equal scales
    t = int(min(64, max(8, math.sqrt(_SPRITE_BUDGET / n))))
    if isinstance(thumbnails, Tensor):  # no point in sprites larger than the images
        t = min(t, max(8, int(max(thumbnails.shape[-2:]))))
    sheets, per_row = _sprite_sheets(thumbs, t)
    ncls = max(int(lab.max()) + 1, len(classes or ()), 0)
    names = list(classes) if classes is not None else [str(i) for i in range(ncls)]
    names += [str(i) for i in range(len(names), ncls)]
    data = {
        "title": title,
        "subtitle": subtitle,
        "n": n,
        "x": [round(float(v), 5) for v in unit[:, 0]],
        "y": [round(float(v), 5) for v in unit[:, 1]],
        "labels": [int(v) for v in lab],
        "idents": list(idents) if idents is not None else [str(i) for i in range(n)],
        "classes": names,
        "colors": [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in class_colors(max(ncls, 1))],
        "tile": t,
        "perRow": per_row,
        "perSheet": per_row * per_row,
        "sheets": sheets,
    }
    payload = json.dumps(data, ensure_ascii=True, separators=(",", ":")).replace("</", "<\\/")
    return (
        _PAGE.replace("__TITLE__", html.escape(title))
        .replace("__DATA__", payload)
        .replace("__SCRIPT__", _SCRIPT)
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
html, body { margin: 0; height: 100%; overflow: hidden; background: #111418; color: #e8ecf1;
  font: 13px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; }
canvas { display: block; width: 100vw; height: 100vh; cursor: grab; }
canvas.drag { cursor: grabbing; }
#hud { position: fixed; left: 12px; top: 10px; background: rgba(17,20,24,.82);
  padding: 8px 12px; border-radius: 10px; max-width: 46vw; pointer-events: none; }
#hud h1 { font-size: 15px; margin: 0 0 2px; }
#hud p { margin: 0; color: #98a2b3; }
#legend { position: fixed; right: 12px; top: 10px; background: rgba(17,20,24,.82);
  padding: 6px 10px; border-radius: 10px; max-height: 80vh; overflow-y: auto; }
#legend div { cursor: pointer; padding: 1px 0; user-select: none; white-space: nowrap; }
#legend div.off { opacity: .35; }
#legend span { display: inline-block; width: 11px; height: 11px; border-radius: 3px;
  margin-right: 6px; vertical-align: -1px; }
#tip { position: fixed; display: none; pointer-events: none; background: #1b2027;
  border: 1px solid #2b3440; border-radius: 8px; padding: 6px; max-width: 320px; }
#tip canvas { width: 96px; height: 96px; image-rendering: pixelated; background: #000;
  display: block; margin-bottom: 4px; cursor: default; }
#tip div { word-break: break-all; }
</style></head>
<body>
<canvas id="map"></canvas>
<div id="hud"><h1 id="title"></h1><p id="sub"></p>
<p>wheel: zoom · drag: pan · double-click: fit · click a class to hide it</p>
<p>tip: add #view=x,y,zoom to the address to share a view</p></div>
<div id="legend"></div>
<div id="tip"><canvas id="tipimg" width="96" height="96"></canvas><div id="tiptext"></div></div>
<script type="application/json" id="convscope-map-data">__DATA__</script>
<script>
__SCRIPT__
</script>
</body></html>
"""

_SCRIPT = r"""
"use strict";
const D = JSON.parse(document.getElementById("convscope-map-data").textContent);
const N = D.n, X = D.x, Y = D.y, L = D.labels;
const canvas = document.getElementById("map"), ctx = canvas.getContext("2d");
const tip = document.getElementById("tip"), tipText = document.getElementById("tiptext");
const tipCtx = document.getElementById("tipimg").getContext("2d");
document.getElementById("title").textContent = D.title;
document.getElementById("sub").textContent =
  (D.subtitle ? D.subtitle + " · " : "") + N.toLocaleString() + " images";
const sheets = D.sheets.map(src => {
  const im = new Image();
  im.onload = draw;
  im.src = src;
  return im;
});
const hidden = new Set();
const rgb = D.colors.map(h => [1, 3, 5].map(i => parseInt(h.slice(i, i + 2), 16)));
const GRAY = [150, 150, 150];
const colorOf = l => (l >= 0 && l < rgb.length ? rgb[l] : GRAY);
// Thumbnail side in map units: about the spacing of a uniform layout.
const TW = 1.1 / Math.sqrt(N);
// A bucket grid over [0,1]^2 for hover look-ups.
const G = Math.max(1, Math.min(512, Math.round(Math.sqrt(N / 4))));
const buckets = new Array(G * G);
for (let i = 0; i < N; i++) {
  const b = Math.min(G - 1, Math.floor(Y[i] * G)) * G + Math.min(G - 1, Math.floor(X[i] * G));
  (buckets[b] || (buckets[b] = [])).push(i);
}
let W = 0, H = 0, dpr = 1, scale = 1, ox = 0, oy = 0, hover = -1, pending = false;
function fit() {
  const s = Math.min(W, H) * 0.9;
  scale = s; ox = (W - s) / 2; oy = (H - s) / 2;
}
function fromHash() {
  // #view=x,y,zoom: centre the map point (x, y) (both in 0..1) at `zoom` times the fit.
  const m = /view=([0-9.]+),([0-9.]+),([0-9.]+)/.exec(location.hash);
  if (!m) return false;
  scale = Math.min(W, H) * 0.9 * parseFloat(m[3]);
  ox = W / 2 - parseFloat(m[1]) * scale; oy = H / 2 - parseFloat(m[2]) * scale;
  return true;
}
function resize() {
  dpr = window.devicePixelRatio || 1;
  W = canvas.clientWidth; H = canvas.clientHeight;
  canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr);
  if (!scale || scale === 1) { if (!fromHash()) fit(); }
  draw();
}
window.addEventListener("hashchange", () => { if (fromHash()) draw(); });
function draw() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(render);
}
function visible() {
  const x0 = -ox / scale, x1 = (W - ox) / scale, y0 = -oy / scale, y1 = (H - oy) / scale;
  const out = [];
  for (let i = 0; i < N; i++) {
    if (hidden.has(L[i])) continue;
    if (X[i] + TW >= x0 && X[i] - TW <= x1 && Y[i] + TW >= y0 && Y[i] - TW <= y1) out.push(i);
  }
  return out;
}
function render() {
  pending = false;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = "#111418";
  ctx.fillRect(0, 0, W, H);
  const vis = visible();
  const px = TW * scale;
  if (px >= 9 && vis.length <= 8000) {
    ctx.imageSmoothingEnabled = px < D.tile;
    const t = D.tile;
    for (const i of vis) {
      const im = sheets[Math.floor(i / D.perSheet)];
      if (!im.complete) continue;
      const j = i % D.perSheet, sx = (j % D.perRow) * t, sy = Math.floor(j / D.perRow) * t;
      const x = X[i] * scale + ox - px / 2, y = Y[i] * scale + oy - px / 2;
      ctx.drawImage(im, sx, sy, t, t, x, y, px, px);
      if (L[i] >= 0) {
        const c = colorOf(L[i]);
        ctx.strokeStyle = "rgb(" + c + ")";
        ctx.lineWidth = Math.min(3, Math.max(1, px / 24));
        ctx.strokeRect(x, y, px, px);
      }
    }
  } else {
    const w = canvas.width, h = canvas.height, img = ctx.createImageData(w, h), p = img.data;
    const r = Math.max(1, Math.min(4, Math.round(px * dpr / 6)));
    for (const i of vis) {
      const cx = Math.round((X[i] * scale + ox) * dpr);
      const cy = Math.round((Y[i] * scale + oy) * dpr);
      const c = colorOf(L[i]);
      const ya = Math.max(0, cy - r), yb = Math.min(h - 1, cy + r);
      const xa = Math.max(0, cx - r), xb = Math.min(w - 1, cx + r);
      for (let yy = ya; yy <= yb; yy++)
        for (let xx = xa; xx <= xb; xx++) {
          const o = (yy * w + xx) * 4;
          p[o] = c[0]; p[o + 1] = c[1]; p[o + 2] = c[2]; p[o + 3] = 255;
        }
    }
    const off = offscreen(w, h);
    off.ctx.putImageData(img, 0, 0);
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.drawImage(off.canvas, 0, 0);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  }
  if (hover >= 0) {
    const s = Math.max(px, 10);
    const x = X[hover] * scale + ox - s / 2, y = Y[hover] * scale + oy - s / 2;
    ctx.strokeStyle = "#ffffff"; ctx.lineWidth = 2; ctx.strokeRect(x - 2, y - 2, s + 4, s + 4);
  }
}
let off = null;
function offscreen(w, h) {
  if (!off) {
    const c = document.createElement("canvas");
    off = { canvas: c, ctx: c.getContext("2d") };
  }
  if (off.canvas.width !== w) off.canvas.width = w;
  if (off.canvas.height !== h) off.canvas.height = h;
  return off;
}
function nearestAt(mx, my) {
  const wx = (mx - ox) / scale, wy = (my - oy) / scale;
  const rad = Math.max(TW / 2, 8 / scale);
  const b0 = Math.max(0, Math.floor((wx - rad) * G));
  const b1 = Math.min(G - 1, Math.floor((wx + rad) * G));
  const c0 = Math.max(0, Math.floor((wy - rad) * G));
  const c1 = Math.min(G - 1, Math.floor((wy + rad) * G));
  let best = -1, bd = rad * rad;
  for (let r = c0; r <= c1; r++) for (let c = b0; c <= b1; c++) {
    const bucket = buckets[r * G + c];
    if (!bucket) continue;
    for (const i of bucket) {
      if (hidden.has(L[i])) continue;
      const d = (X[i] - wx) ** 2 + (Y[i] - wy) ** 2;
      if (d <= bd) { bd = d; best = i; }
    }
  }
  return best;
}
function showTip(i, mx, my) {
  if (i < 0) { tip.style.display = "none"; return; }
  const t = D.tile, im = sheets[Math.floor(i / D.perSheet)], j = i % D.perSheet;
  tipCtx.imageSmoothingEnabled = false;
  tipCtx.clearRect(0, 0, 96, 96);
  const sx = (j % D.perRow) * t, sy = Math.floor(j / D.perRow) * t;
  if (im.complete) tipCtx.drawImage(im, sx, sy, t, t, 0, 0, 96, 96);
  const lab = L[i] >= 0 ? (D.classes[L[i]] ?? String(L[i])) : "no label";
  tipText.textContent = D.idents[i] + " \u2014 " + lab;
  tip.style.display = "block";
  tip.style.left = Math.min(mx + 14, W - 330) + "px";
  tip.style.top = Math.min(my + 14, H - 140) + "px";
}
let drag = null;
canvas.addEventListener("mousedown", e => {
  drag = [e.clientX, e.clientY, ox, oy];
  canvas.classList.add("drag");
});
window.addEventListener("mouseup", () => { drag = null; canvas.classList.remove("drag"); });
window.addEventListener("mousemove", e => {
  if (drag) {
    ox = drag[2] + e.clientX - drag[0]; oy = drag[3] + e.clientY - drag[1];
    tip.style.display = "none"; draw(); return;
  }
  if (e.target !== canvas) return;
  const i = nearestAt(e.clientX, e.clientY);
  if (i !== hover) { hover = i; draw(); }
  showTip(i, e.clientX, e.clientY);
});
canvas.addEventListener("mouseleave", () => { tip.style.display = "none"; hover = -1; draw(); });
canvas.addEventListener("wheel", e => {
  e.preventDefault();
  const f = Math.exp(-e.deltaY * (e.deltaMode === 1 ? 0.05 : 0.0015));
  const ns = Math.min(Math.max(scale * f, Math.min(W, H) * 0.2), Math.min(W, H) * Math.sqrt(N) * 4);
  const k = ns / scale;
  ox = e.clientX - (e.clientX - ox) * k; oy = e.clientY - (e.clientY - oy) * k; scale = ns;
  draw();
}, { passive: false });
canvas.addEventListener("dblclick", () => { fit(); draw(); });
window.addEventListener("keydown", e => { if (e.key === "0") { fit(); draw(); } });
const legend = document.getElementById("legend");
const counts = new Map();
for (const l of L) counts.set(l, (counts.get(l) || 0) + 1);
[...counts.keys()].sort((a, b) => a - b).forEach(l => {
  const row = document.createElement("div");
  const sw = document.createElement("span");
  sw.style.background = "rgb(" + colorOf(l) + ")";
  row.appendChild(sw);
  row.appendChild(document.createTextNode(
    (l >= 0 ? (D.classes[l] ?? String(l)) : "no label") + "  (" + counts.get(l) + ")"));
  row.onclick = () => {
    if (hidden.has(l)) hidden.delete(l); else hidden.add(l);
    row.classList.toggle("off");
    draw();
  };
  legend.appendChild(row);
});
if (counts.size <= 1 && counts.has(-1)) legend.style.display = "none";
window.addEventListener("resize", resize);
resize();
"""
