"""A self-contained HTML report of score results: one file, no network, opens in any browser.

Thumbnails are embedded as base64 JPEG, the three score histograms are inline SVG, the cards sort
by each axis with a small inline script, and failed files are listed with their reason. Every
file name is shown in its display form (perceptlite/records/names.py) and HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from ..images.decode import DecodeError, decode_file
from ..pipeline import default_jobs
from ..records import AXES, AXIS_NAMES, ScoreResult
from ..records.names import display_name, escape_unsafe

if TYPE_CHECKING:
    from ..maps import QualityMap

THUMBNAIL_SIZE = 192
EXTREMES = 5  # best and worst images shown per axis
BINS = 20
TICKS = (0, 25, 50, 75, 100)
BREAK_AFTER = "/\\_- "  # a long name wraps after these before it breaks anywhere

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
.hists{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:1.5em}.hists figure{margin:0}
.hists svg{width:100%;height:auto}.hists figcaption{font-size:.85em;text-align:center}
.row{display:grid;grid-template-columns:repeat(auto-fill,minmax(120px,1fr));gap:.5em;margin:.3em 0 1em}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:.8em}
.card,.mini{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.4em;font-size:.8em;min-width:0}
.mini img{max-width:100%;max-height:112px;display:block;margin:auto}
.card img{max-width:100%;max-height:192px;display:block;margin:auto}
.name{overflow-wrap:anywhere;white-space:pre-wrap;margin:.3em 0}
.noimg{height:100px;display:flex;align-items:center;justify-content:center;color:#999}
.scores span{display:inline-block;margin-right:.6em}
button{margin-right:.4em}button[aria-pressed=true]{font-weight:bold}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left;font-size:.85em}
"""

_SCRIPT = """
(function () {
  var cards = document.getElementById("cards");
  var status = document.getElementById("sort-status");
  var buttons = document.querySelectorAll("button[data-sort]");
  function sortBy(key, descending) {
    var items = Array.prototype.slice.call(cards.querySelectorAll(".card"));
    items.sort(function (a, b) {
      var x = a.dataset[key], y = b.dataset[key];
      var order = key === "name" ? x.localeCompare(y) : parseFloat(x) - parseFloat(y);
      if (order === 0) { return parseInt(a.dataset.index, 10) - parseInt(b.dataset.index, 10); }
      return descending ? -order : order;
    });
    items.forEach(function (item) { cards.appendChild(item); });
    status.textContent = "sorted by " + key + (descending ? ", highest first" : ", lowest first");
  }
  buttons.forEach(function (button) {
    button.addEventListener("click", function () {
      // First click: highest first (names: A to Z); clicking the active button again flips it.
      var active = button.getAttribute("aria-pressed") === "true";
      var descending = active ? button.dataset.dir !== "desc" : button.dataset.sort !== "name";
      buttons.forEach(function (other) { other.setAttribute("aria-pressed", "false"); });
      button.setAttribute("aria-pressed", "true");
      button.dataset.dir = descending ? "desc" : "asc";
      sortBy(button.dataset.sort, descending);
    });
  });
})();
"""


def thumbnail_data(path: str, size: int = THUMBNAIL_SIZE) -> str | None:
    """A `data:` URI with a small JPEG of the image, or None when it cannot be decoded."""
    try:
        decoded = decode_file(path, draft_size=size)
    except DecodeError:
        return None
    image = decoded.image
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def histogram_svg(values: Sequence[float], label: str, bins: int = BINS) -> str:
    """An inline SVG bar chart of 0-100 scores."""
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, max(0, int(value / 100 * bins)))] += 1
    width, height, top = 300, 120, 10
    peak = max(counts) or 1
    bar = width / bins
    bars = []
    for index, count in enumerate(counts):
        bar_height = (height - top) * count / peak
        low, high = index * 100 // bins, (index + 1) * 100 // bins
        bars.append(
            f'<rect x="{index * bar:.1f}" y="{height - bar_height:.1f}" width="{bar - 1:.1f}" height="{bar_height:.1f}" fill="#4a7bb7">'
            f"<title>{low}-{high}: {count}</title></rect>"
        )
    anchors = {0: "start", 100: "end"}  # the outer ticks are anchored inwards: "100" is never clipped
    axis = "".join(
        f'<text x="{x * width / 100:.0f}" y="{height + 14}" font-size="10" text-anchor="{anchors.get(x, "middle")}">{x}</text>'
        for x in TICKS
    )
    return (
        f'<svg class="histogram" role="img" aria-label="histogram of {html.escape(label)}" width="{width + 10}" height="{height + 20}" '
        f'viewBox="-5 0 {width + 10} {height + 20}" xmlns="http://www.w3.org/2000/svg">'
        f'{"".join(bars)}<line x1="0" y1="{height}" x2="{width}" y2="{height}" stroke="#555"/>{axis}</svg>'
    )


def build_report(
    results: Sequence[ScoreResult], title: str = "perceptlite report", jobs: int | None = None, maps: dict[str, QualityMap] | None = None
) -> str:
    """The whole HTML document for these results; `maps` (by path): quality maps each card can show."""
    from ..maps import html as map_html

    maps = maps or {}
    scored = [result for result in results if result.error is None and any(getattr(result, axis) is not None for axis in AXES)]
    failed = [result for result in results if result.error is not None]
    with ThreadPoolExecutor(max_workers=jobs or default_jobs()) as pool:
        thumbnails = list(pool.map(thumbnail_data, [result.file for result in scored]))
    thumbnail_of = {id(result): data for result, data in zip(scored, thumbnails)}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_text(title)}</title><style>{_STYLE}{map_html.STYLE if maps else ''}</style></head><body>",
        f"<h1>{_text(title)}</h1>",
        f'<p id="summary">{len(scored)} scored, {len(failed)} failed. Scores are 0-100, higher is better: '
        + ", ".join(f"<b>{axis}</b> {AXIS_NAMES[axis]}" for axis in AXES)
        + ".</p>",
    ]
    if scored:
        parts.append('<h2>Score distributions</h2><div class="hists">')
        for axis in AXES:
            values = [getattr(result, axis) for result in scored if getattr(result, axis) is not None]
            parts.append(f"<figure>{histogram_svg(values, axis)}<figcaption>{axis} ({AXIS_NAMES[axis]})</figcaption></figure>")
        parts.append("</div>")
        parts.append(_extremes(scored, thumbnail_of))
    parts.append(_cards(scored, thumbnail_of, maps))
    parts.append(_failures(failed))
    parts.append(f"<script>{_SCRIPT}{map_html.SCRIPT if maps else ''}</script></body></html>")
    return "\n".join(parts)


def write_report(
    results: Sequence[ScoreResult], output: str | os.PathLike, title: str = "perceptlite report", maps: dict[str, QualityMap] | None = None
) -> None:
    """Write the report to `output` atomically."""
    from ..records.publish import atomic_output

    document = build_report(results, title, maps=maps)
    with atomic_output(output) as handle:
        handle.write(document)


def _extremes(scored: list[ScoreResult], thumbnail_of: dict) -> str:
    parts = ["<h2>Best and worst per axis</h2>"]
    for axis in AXES:
        ranked = sorted((r for r in scored if getattr(r, axis) is not None), key=lambda r: getattr(r, axis), reverse=True)
        best = ranked[:EXTREMES]
        worst = list(reversed(ranked[len(best) :][-EXTREMES:]))  # never an image that is already among the best
        for label, group in (("best", best), ("worst", worst)):
            cells = "".join(_mini(result, axis, thumbnail_of.get(id(result))) for result in group)
            parts.append(f'<h3>{axis}: {label}</h3><div class="row extremes" data-axis="{axis}" data-kind="{label}">{cells}</div>')
    return "".join(parts)


def _mini(result: ScoreResult, axis: str, thumbnail: str | None) -> str:
    return (
        f'<div class="mini">{_image(thumbnail, result.file)}'
        f'<div class="name">{_name(os.path.basename(result.file))}</div>{axis} {_score(getattr(result, axis))}</div>'
    )


def _cards(scored: list[ScoreResult], thumbnail_of: dict, maps: dict[str, QualityMap]) -> str:
    from ..maps import html as map_html

    buttons = "".join(f'<button type="button" data-sort="{key}" aria-pressed="false">{key}</button>' for key in (*AXES, "name"))
    parts = [f'<h2>All images</h2><p>Sort by: {buttons} <span id="sort-status">in input order</span></p><div id="cards" class="cards">']
    for index, result in enumerate(scored):
        data = " ".join(f'data-{axis}="{_sort_value(getattr(result, axis))}"' for axis in AXES)
        scores = "".join(f'<span class="{axis}">{axis} {_score(getattr(result, axis))}</span>' for axis in AXES)
        parts.append(
            f'<div class="card" data-index="{index}" {data} data-name="{_attribute(display_name(result.file))}">'
            f"{_thumb(thumbnail_of.get(id(result)), result.file, maps.get(result.file))}"
            f'<div class="name">{_name(result.file)}</div>'
            f'<div class="scores">{scores}</div><div class="size">{result.width}&times;{result.height}</div>'
            f"{map_html.toggle_button() if result.file in maps else ''}</div>"
        )
    parts.append("</div>")
    return "".join(parts)


def _failures(failed: list[ScoreResult]) -> str:
    if not failed:
        return '<h2>Failed files</h2><p id="failures">None.</p>'
    rows = "".join(f"<tr><td>{_name(result.file)}</td><td>{_text(escape_unsafe(result.error or ''))}</td></tr>" for result in failed)
    return f'<h2>Failed files</h2><table id="failures"><tr><th>file</th><th>reason</th></tr>{rows}</table>'


def _thumb(thumbnail: str | None, path: str, quality: QualityMap | None) -> str:
    """A card's thumbnail, with its quality map over it (hidden until its button is pressed)."""
    from ..maps import html as map_html

    if quality is None or thumbnail is None:
        return _image(thumbnail, path)
    return f'<div class="thumb">{_image(thumbnail, path)}{map_html.overlay_svg(quality)}</div>'


def _image(thumbnail: str | None, path: str) -> str:
    if thumbnail is None:
        return '<div class="noimg">no preview</div>'
    return f'<img src="{thumbnail}" alt="{_attribute(display_name(os.path.basename(path)))}" loading="lazy">'


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _sort_value(value: float | None) -> str:
    return "-1" if value is None else f"{value:.4f}"  # a missing score sorts below every real one


def _name(path: str) -> str:
    """A file name as HTML text: its display form (names.py), so control characters and bytes that
    are not UTF-8 appear as escapes and the page stays valid UTF-8; a line may wrap after a folder
    separator, '_', '-' or a space (<wbr>) rather than in the middle of a word."""
    return "<wbr>".join(_text(part) for part in re.split(f"(?<=[{re.escape(BREAK_AFTER)}])", display_name(path)))


def _text(value: str) -> str:
    return html.escape(value, quote=False)


def _attribute(value: str) -> str:
    return html.escape(value, quote=True)
