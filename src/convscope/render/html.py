"""A self-contained HTML gallery page (no external assets)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Figure", "Section", "gallery_html"]


@dataclass(frozen=True)
class Figure:
    src: str  # a path relative to the page
    caption: str = ""
    wide: bool = False
    href: str = ""  # where a click on the image leads (relative to the page), if anywhere


@dataclass(frozen=True)
class Section:
    title: str
    intro: str = ""
    figures: Sequence[Figure] = ()
    table: Sequence[Sequence[str]] = ()  # first row is the header
    notes: Sequence[str] = field(default_factory=tuple)
    links: Sequence[tuple[str, str]] = ()  # (href relative to the page, text)


_CSS = """
:root { color-scheme: dark; --bg:#111418; --card:#1b2027; --ink:#e8ecf1; --dim:#98a2b3;
        --accent:#7cc4ff; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.5 system-ui, -apple-system, Segoe UI, sans-serif;
       background: var(--bg); color: var(--ink); }
header { padding: 2.5rem 2rem 1rem; max-width: 1200px; margin: auto; }
header h1 { margin: 0; font-size: 2.2rem; letter-spacing: -.02em; }
header h1 span { color: var(--accent); }
header p { color: var(--dim); margin: .4rem 0 0; }
nav { max-width: 1200px; margin: 0 auto; padding: 0 2rem; display:flex; gap:.5rem;
      flex-wrap: wrap; }
nav a { color: var(--accent); text-decoration: none; border: 1px solid #2b3440;
        padding: .15rem .6rem; border-radius: 999px; font-size: .85rem; }
section { max-width: 1200px; margin: 1.5rem auto; padding: 1.2rem 2rem;
          background: var(--card); border-radius: 14px; }
section h2 { margin: 0 0 .3rem; }
section > p { color: var(--dim); margin-top: 0; }
section > p.links a { color: var(--accent); font-weight: 600; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr));
        gap: 1rem; }
figure { margin: 0; }
figure.wide { grid-column: 1 / -1; }
figure img { width: 100%; height: auto; border-radius: 8px; background: #fff;
             image-rendering: auto; }
figcaption { color: var(--dim); font-size: .85rem; margin-top: .3rem; }
table { border-collapse: collapse; font-size: .85rem; margin-top: .6rem; }
td, th { padding: .2rem .7rem; border-bottom: 1px solid #2b3440; text-align: left; }
th { color: var(--accent); font-weight: 600; }
footer { color: var(--dim); text-align: center; padding: 2rem; font-size: .8rem; }
"""


def _anchor(title: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in title.lower()).strip("-")


def gallery_html(title: str, subtitle: str, sections: Sequence[Section], footer: str = "") -> str:
    esc = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{esc(title).replace('convscope', '<span>convscope</span>')}</h1>",
        f"<p>{esc(subtitle)}</p></header>",
        "<nav>"
        + "".join(f"<a href='#{_anchor(s.title)}'>{esc(s.title)}</a>" for s in sections)
        + "</nav>",
    ]
    for s in sections:
        parts.append(f"<section id='{_anchor(s.title)}'><h2>{esc(s.title)}</h2>")
        if s.intro:
            parts.append(f"<p>{esc(s.intro)}</p>")
        if s.links:
            anchors = " · ".join(f"<a href='{esc(h)}'>{esc(t)}</a>" for h, t in s.links)
            parts.append(f"<p class='links'>{anchors}</p>")
        if s.figures:
            parts.append("<div class='grid'>")
            for f in s.figures:
                cls = " class='wide'" if f.wide else ""
                img = f"<img src='{esc(f.src)}' alt='{esc(f.caption)}' loading='lazy'>"
                if f.href:
                    img = f"<a href='{esc(f.href)}'>{img}</a>"
                parts.append(
                    f"<figure{cls}>{img}<figcaption>{esc(f.caption)}</figcaption></figure>"
                )
            parts.append("</div>")
        if s.table:
            head, *rows = s.table
            parts.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>")
            for r in rows:
                parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>")
            parts.append("</table>")
        for n in s.notes:
            parts.append(f"<p>{esc(n)}</p>")
        parts.append("</section>")
    parts.append(f"<footer>{esc(footer)}</footer></body></html>")
    return "\n".join(parts)
