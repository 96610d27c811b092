"""Draw a quality map over its photo: each cell tinted by its iqa and labelled with it, and a legend.

Colours are on the absolute 0-100 iqa scale (so maps of different photos compare): red is poor,
yellow middling, green good. Every cell also carries its number, which needs no colour vision.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .grid import QualityMap

LONG_SIDE = (640, 1600)  # the drawn photo's long side is kept within these pixels
TINT = 0.42  # how much of a cell's colour covers the photo
# (iqa, RGB) stops of the colour scale, a red-yellow-green ramp (ColorBrewer RdYlGn)
STOPS = ((0, (165, 0, 38)), (25, (215, 48, 39)), (45, (253, 174, 97)), (55, (254, 224, 139)), (70, (166, 217, 106)), (100, (0, 104, 55)))
TICKS = (0, 25, 50, 75, 100)


def colour(iqa: float) -> tuple[int, int, int]:
    """The colour of an iqa value (0-100) on the map's scale."""
    levels = [level for level, _ in STOPS]
    return tuple(int(round(np.interp(iqa, levels, [rgb[channel] for _, rgb in STOPS]))) for channel in range(3))  # type: ignore[return-value]


def render(quality: QualityMap, photo: Image.Image) -> Image.Image:
    """The photo (RGB, full size) with the map drawn over it and a legend strip below."""
    scale = _display_scale(photo.width, photo.height)
    shown = photo.resize((max(1, round(photo.width * scale)), max(1, round(photo.height * scale))), Image.Resampling.LANCZOS)
    tinted = _overlay(quality, shown, scale)
    legend = _legend(quality, tinted.width)
    canvas = Image.new("RGB", (tinted.width, tinted.height + legend.height), "white")
    canvas.paste(tinted, (0, 0))
    canvas.paste(legend, (0, tinted.height))
    return canvas


def _display_scale(width: int, height: int) -> float:
    """Large photos are drawn smaller, small ones larger, so that the cells' numbers stay readable."""
    long_side = max(width, height)
    low, high = LONG_SIDE
    return high / long_side if long_side > high else max(1.0, low / long_side)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(8, size))


def _overlay(quality: QualityMap, shown: Image.Image, scale: float) -> Image.Image:
    tint = Image.new("RGB", shown.size)
    draw = ImageDraw.Draw(tint)
    boxes = [tuple(round(v * scale) for v in cell.box) for cell in quality.cells]
    for box, cell in zip(boxes, quality.cells):
        draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=colour(cell.iqa))
    tinted = Image.blend(shown, tint, TINT)
    draw = ImageDraw.Draw(tinted)
    smallest = min(min(box[2] - box[0], box[3] - box[1]) for box in boxes)
    font = _font(smallest // 4)
    for box, cell in zip(boxes, quality.cells):
        draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), outline=(40, 40, 40), width=1)
        if smallest >= 16:
            centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
            draw.text(centre, f"{cell.iqa:.0f}", fill="white", font=font, anchor="mm", stroke_width=2, stroke_fill="black")
    return tinted


def _legend(quality: QualityMap, width: int) -> Image.Image:
    """A 0-100 colour bar with ticks, the image's iqa marked on it, and one line saying what it is."""
    text_size = max(12, width // 60)
    font = _font(text_size)
    margin, bar_height = text_size, text_size
    left, right, top = margin, width - margin, margin // 2 + text_size + 18
    legend = Image.new("RGB", (width, top + bar_height + text_size + margin), "white")
    draw = ImageDraw.Draw(legend)
    for x in range(left, right):
        draw.line((x, top, x, top + bar_height), fill=colour(100 * (x - left) / max(1, right - left - 1)))
    for tick in TICKS:
        at = left + (right - left - 1) * tick / 100
        draw.line((at, top + bar_height, at, top + bar_height + 4), fill="black")
        anchor = {0: "la", 100: "ra"}.get(tick, "ma")
        draw.text((at, top + bar_height + 6), str(tick), fill="black", font=font, anchor=anchor)
    marker = left + (right - left - 1) * min(max(quality.iqa, 0), 100) / 100
    draw.polygon([(marker - 6, top - 8), (marker + 6, top - 8), (marker, top)], fill="black")
    caption = f"iqa of each cell (technical quality, 0-100, higher is better): red poor, yellow fair, green good; whole image {quality.iqa:.1f} (marker)"
    draw.text((left, margin // 2), caption, fill="black", font=_font(min(text_size, _fit(caption, right - left, text_size))))
    return legend


def _fit(text: str, width: int, size: int) -> int:
    """The largest font size (at most `size`) at which `text` fits in `width` pixels."""
    while size > 8 and ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=_font(size)) > width:
        size -= 1
    return size
