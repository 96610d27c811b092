"""A quality map in the HTML report: an SVG over a card's thumbnail, shown and hidden by its button."""

from __future__ import annotations

from .grid import QualityMap
from .render import TINT, colour

STYLE = """
.thumb{position:relative;width:fit-content;margin:auto}.thumb img{display:block}
.thumb svg.map{position:absolute;left:0;top:0;width:100%;height:100%}.thumb svg.map[hidden]{display:none}
button.map-toggle{font-size:.85em;margin-top:.3em}
"""

# One handler for every card: a click on "map" shows or hides that card's overlay.
SCRIPT = """
(function () {
  document.querySelectorAll("button.map-toggle").forEach(function (button) {
    button.addEventListener("click", function () {
      var overlay = button.closest(".card").querySelector("svg.map");
      var shown = overlay.hasAttribute("hidden");
      if (shown) { overlay.removeAttribute("hidden"); } else { overlay.setAttribute("hidden", ""); }
      button.setAttribute("aria-pressed", shown ? "true" : "false");
      button.textContent = shown ? "hide map" : "map";
    });
  });
})();
"""


def overlay_svg(quality: QualityMap) -> str:
    """The map's cells in the image's own pixel coordinates, stretched over the thumbnail; hidden at first."""
    smallest = min(min(x1 - x0, y1 - y0) for x0, y0, x1, y1 in (cell.box for cell in quality.cells))
    cells = []
    for cell in quality.cells:
        x0, y0, x1, y1 = cell.box
        red, green, blue = colour(cell.iqa)
        cells.append(
            f'<g data-iqa="{cell.iqa:.2f}"><title>iqa {cell.iqa:.1f}</title>'
            f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="rgb({red},{green},{blue})" fill-opacity="{TINT + 0.1:.2f}" '
            f'stroke="#222" stroke-width="{max(1, smallest // 100)}"/>'
            f'<text x="{(x0 + x1) / 2:.0f}" y="{(y0 + y1) / 2:.0f}" font-size="{smallest * 0.35:.0f}" text-anchor="middle" '
            f'dominant-baseline="central" fill="#fff" stroke="#000" stroke-width="{max(1, smallest // 60)}" paint-order="stroke">'
            f"{cell.iqa:.0f}</text></g>"
        )
    return (
        f'<svg class="map" hidden role="img" aria-label="quality map, {quality.grid[0]} x {quality.grid[1]} cells" '
        f'viewBox="0 0 {quality.width} {quality.height}" preserveAspectRatio="none" xmlns="http://www.w3.org/2000/svg">{"".join(cells)}</svg>'
    )


def toggle_button() -> str:
    return '<button type="button" class="map-toggle" aria-pressed="false" title="iqa of each cell: red poor, yellow fair, green good">map</button>'
