"""Image files for the student pipeline: find them under a folder, decode them as the labeller does.

The labeller (label.py) and the teachers' calibration (teachers/ista.py) both read images through
these two functions; keeping them here lets the teachers package import them without importing the
labeller, which itself imports the teachers.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
DEFAULT_MAX_SIDE = 512


def discover_images(root: Path) -> list[Path]:
    """All image files under `root` (recursive, sorted); a single file is returned as is."""
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def load_image(path: Path, max_side: int | None = DEFAULT_MAX_SIDE) -> Image.Image:
    """Decode to RGB (EXIF orientation applied) and downscale so the long side is at most `max_side` (0 or None: as is)."""
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    if max_side and max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.BICUBIC)
    return image
