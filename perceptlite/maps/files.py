"""Write a map as ``DIR/<stem>.map.png`` and ``DIR/<stem>.map.json``, never replacing a file unasked.

Two inputs with the same stem (a/x.jpg, b/x.png), or a name an earlier run left in DIR, give the
next free name: x-1, x-2, ... (both files of a map share it). A file appears under its final name
only when complete: written to a temporary file, then linked into place, which fails rather than
replace a name that exists (unless `overwrite`, which replaces maps of earlier runs by rename).
"""

from __future__ import annotations

import io
import json
import os

from PIL import Image

from ..records.publish import write_file
from .grid import QualityMap
from .render import render

SUFFIXES = (".map.png", ".map.json")
MAX_ATTEMPTS = 10_000


class MapNames:
    """Picks each map's stem in DIR: free of this run's earlier maps and, unless `overwrite`, of existing files."""

    def __init__(self, folder: str, overwrite: bool = False):
        self.folder = folder
        self.overwrite = overwrite
        self.taken: set[str] = set()

    def candidates(self, path: str):
        """Stems for the map of `path`, best first: its own stem, then stem-1, stem-2, ..."""
        stem = os.path.splitext(os.path.basename(os.path.normpath(path)))[0] or "image"
        for attempt in range(MAX_ATTEMPTS):
            name = stem if attempt == 0 else f"{stem}-{attempt}"
            if name in self.taken:
                continue
            if self.overwrite or not any(os.path.lexists(self.target(name, suffix)) for suffix in SUFFIXES):
                yield name
        raise FileExistsError(f"{stem}{SUFFIXES[0]}: {MAX_ATTEMPTS} names with this stem are taken in {self.folder}")

    def target(self, stem: str, suffix: str) -> str:
        return os.path.join(self.folder, stem + suffix)


def write_map(quality: QualityMap, photo: Image.Image, names: MapNames) -> tuple[str, str]:
    """Write the map's PNG (drawn over `photo`) and JSON under the first free stem; their paths."""
    buffer = io.BytesIO()
    render(quality, photo).save(buffer, format="PNG")
    document = (json.dumps(quality.as_dict()) + "\n").encode("utf-8")
    for stem in names.candidates(quality.path or "image"):
        png, record = names.target(stem, SUFFIXES[0]), names.target(stem, SUFFIXES[1])
        if not write_file(png, buffer.getvalue(), replace=names.overwrite):
            continue  # taken since the names were checked: the next one
        if not write_file(record, document, replace=names.overwrite):
            os.unlink(png)
            continue
        names.taken.add(stem)
        return png, record
    raise AssertionError("unreachable: candidates() ends by raising")
