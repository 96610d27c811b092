"""The quality map: the iqa of each cell of a grid over an image, read by the package's own crop network.

A package whose ONNX graph reads native-resolution crops (manifest ``input.crops``) pools what it
sees in its K crops into the image's iqa. A cell's iqa is what the same graph says when all K crops
come from that cell: the crops are cut exactly as the runtime cuts them (the photo at its working
scale, crops of ``crops.size`` pixels, the manifest's normalisation), and the whole-image view is
the image's own, so a cell's iqa is on the same scale as the image's. This holds for whatever
network a package ships, as long as it keeps the package contract.

Cells tile the image. By default each cell is as close to one crop as the image allows at its
working scale (never smaller), so a cell's crops lie inside it and judge its pixels only.

How many crops read a cell follows the graph. Where its crops input takes any number of views (the
bundled model's does: it pools each crop's statistics by their mean), a cell is read by the crops
that tile it, one per crop width along each axis, rounded: a default cell by the one crop at its
centre. The same crop K times would pool to the same iqa, so one is K times less work for the same
number. Where the graph fixes K views, a cell is read by K crops spread along its diagonal.
"""

from __future__ import annotations

import math
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from ..backends.base import Backend
from ..backends.preprocess import to_tensor, working_scale
from ..errors import PerceptliteError
from ..images.decode import DecodedImage
from ..package.manifest import CropSpec, InputSpec
from ..records import DECIMALS

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1): pixels x0 <= x < x1, y0 <= y < y1
CELLS_PER_RUN = 2  # cells per inference call (bench, 2 cores: fastest; 8 cost ~1 GiB of activations, no faster)
MAX_CELLS = 4096  # a grid finer than this is a typo, not a map


class QualityMapError(PerceptliteError):
    """A model package that cannot make a quality map, a grid it cannot use, or an output that is no number."""


class Cell(NamedTuple):
    """One cell of a map: where it lies in the image's own pixels, and its iqa (0-100)."""

    box: Box
    iqa: float


@dataclass(frozen=True)
class QualityMap:
    """The iqa of each cell of a rows x cols grid over an image, beside the image's own iqa."""

    path: str | None  # the file it was made from; None for an in-memory image
    width: int  # the image's size after EXIF orientation
    height: int
    iqa: float  # the image's iqa, exactly as Scorer.score gives it
    grid: tuple[int, int]  # (rows, cols)
    cells: tuple[Cell, ...]  # row by row, left to right

    def values(self) -> np.ndarray:
        """The cells' iqa as a float64 array of shape (rows, cols)."""
        return np.array([cell.iqa for cell in self.cells], dtype=np.float64).reshape(self.grid)

    def as_dict(self) -> dict[str, Any]:
        """The map as written to ``<stem>.map.json`` (scores rounded as in score records)."""
        return {
            "path": self.path,
            "width": self.width,
            "height": self.height,
            "iqa": round(self.iqa, DECIMALS),
            "grid": list(self.grid),
            "cells": [{"box": list(cell.box), "iqa": round(cell.iqa, DECIMALS)} for cell in self.cells],
        }


def parse_grid(text: str) -> tuple[int, int]:
    """ "ROWSxCOLS" (e.g. "6x8") -> (rows, cols); QualityMapError with a one-line message otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    rows, cols = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if rows < 1 or cols < 1 or rows * cols > MAX_CELLS:
        raise QualityMapError(f"grid {text!r}: expected ROWSxCOLS, e.g. 6x8, with at most {MAX_CELLS} cells")
    return rows, cols


def check_map_support(backend: Backend) -> CropSpec:
    """The package's crop spec; QualityMapError for a package whose model reads no crops."""
    package = backend.package
    crops = package.input.crops
    if package.backend != "onnx" or crops is None:
        raise QualityMapError(
            f"{package.path}: {package.name} {package.version} ({package.backend}) reads no native-resolution crops "
            "(its manifest has no input.crops), so it cannot make a quality map; use an ONNX package with crops, such as the bundled one"
        )
    return crops


def working_size(width: int, height: int, crops: CropSpec) -> tuple[int, int]:
    """The size at which the runtime cuts the crops of a width x height image (as prepare_crops does)."""
    scale = working_scale(width, height, crops)
    return max(crops.size, round(width * scale)), max(crops.size, round(height * scale))


def auto_grid(width: int, height: int, crops: CropSpec) -> tuple[int, int]:
    """The finest grid whose cells are at least one crop across at the working scale."""
    working_width, working_height = working_size(width, height, crops)
    return max(1, working_height // crops.size), max(1, working_width // crops.size)


def cell_boxes(width: int, height: int, grid: tuple[int, int]) -> list[Box]:
    """The rows x cols cells tiling a width x height image, row by row (edges rounded to pixels)."""
    rows, cols = grid
    xs = [round(col * width / cols) for col in range(cols + 1)]
    ys = [round(row * height / rows) for row in range(rows + 1)]
    return [(xs[col], ys[row], xs[col + 1], ys[row + 1]) for row in range(rows) for col in range(cols)]


def crop_origins(start: float, end: float, size: int, limit: int, count: int) -> list[int]:
    """Where `count` crops of `size` start along one axis of a cell spanning [start, end): spread
    evenly inside a cell wider than a crop, all centred on a narrower one; kept inside [0, limit)."""
    span = end - start
    if span <= size or count == 1:
        centres = [(start + end) / 2] * count
    else:
        centres = [start + size / 2 + index * (span - size) / (count - 1) for index in range(count)]
    return [min(max(round(centre - size / 2), 0), limit - size) for centre in centres]


class CropLayout(NamedTuple):
    """How the crops that read one cell lie: `across` x `down` crops tiling it, or, when `diagonal`,
    `across` (= `down`) crops along its diagonal (a graph that takes exactly that many views)."""

    across: int
    down: int
    diagonal: bool


def crop_layout(cell_width: float, cell_height: float, crops: CropSpec, fixed_views: int | None) -> CropLayout:
    """The crops for cells of cell_width x cell_height working pixels: the graph's fixed K along the
    diagonal, or, when it takes any number, one per crop width each way (rounded, at least one)."""
    if fixed_views is not None:
        return CropLayout(fixed_views, fixed_views, diagonal=True)
    return CropLayout(max(1, round(cell_width / crops.size)), max(1, round(cell_height / crops.size)), diagonal=False)


def cell_crops(working: Image.Image, box: Box, scale: tuple[float, float], spec: InputSpec, layout: CropLayout) -> np.ndarray:
    """The normalised crops [views, 3, S, S] that read one cell (`box` in image pixels, `scale` from
    image to working pixels), cut from the working-size image as `layout` says."""
    crops = spec.crops
    assert crops is not None
    x0, y0, x1, y1 = box
    lefts = crop_origins(x0 * scale[0], x1 * scale[0], crops.size, working.width, layout.across)
    tops = crop_origins(y0 * scale[1], y1 * scale[1], crops.size, working.height, layout.down)
    origins = list(zip(lefts, tops)) if layout.diagonal else [(left, top) for top in tops for left in lefts]
    tensors = np.empty((len(origins), 3, crops.size, crops.size), dtype=np.float32)
    for tensor, (left, top) in zip(tensors, origins):
        to_tensor(working.crop((left, top, left + crops.size, top + crops.size)), spec, out=tensor)
    return tensors


def to_working_size(image: Image.Image, spec: InputSpec) -> Image.Image:
    """The image at the crops' working size: one resize of the whole image, which gives the same
    pixels as prepare_crops's resampling of each crop's region (tests/maps check it)."""
    crops = spec.crops
    assert crops is not None
    size = working_size(image.width, image.height, crops)
    return image if size == image.size else image.resize(size, Image.Resampling[spec.interpolation.upper()])


def make_map(
    backend: Backend,
    decoded: DecodedImage,
    path: str | None = None,
    grid: tuple[int, int] | None = None,
    infer_gate: AbstractContextManager[Any] | None = None,
) -> QualityMap:
    """The quality map of a decoded image (full resolution, as the backend's draft_size asks).

    `grid`: (rows, cols) [default: auto_grid]; `infer_gate`: held around each inference call."""
    crops = check_map_support(backend)
    image = decoded.image
    grid = grid or auto_grid(image.width, image.height, crops)
    if grid[0] * grid[1] > MAX_CELLS or grid[0] > image.height or grid[1] > image.width:
        raise QualityMapError(f"grid {grid[0]}x{grid[1]} does not fit a {image.width}x{image.height} image")
    whole, image_crops = backend.prepare(image, decoded.box)
    working = to_working_size(image, backend.package.input)
    scale = (working.width / image.width, working.height / image.height)
    boxes = cell_boxes(image.width, image.height, grid)
    # One layout for every cell (from the nominal cell size), so that the cells batch together.
    layout = crop_layout(working.width / grid[1], working.height / grid[0], crops, getattr(backend, "crop_views", crops.count))
    cell_inputs = [(whole, cell_crops(working, box, scale, backend.package.input, layout)) for box in boxes]
    scores = _infer_in_runs(backend, [(whole, image_crops)], cell_inputs, infer_gate or nullcontext())
    if not all(math.isfinite(value) for value in scores):
        raise QualityMapError(f"{path or 'image'}: the model gave no finite iqa for some cells (NaN or infinity)")
    # Box and scores are in the decoded image's pixels, which are the picture's (no draft decode).
    return QualityMap(path, decoded.width, decoded.height, scores[0], grid, tuple(Cell(b, s) for b, s in zip(boxes, scores[1:])))


def _infer_in_runs(backend: Backend, image_input: list, cell_inputs: list, gate: AbstractContextManager[Any]) -> list[float]:
    """iqa of the image's own input, then of each cell's: the image alone (its crops may be more
    than a cell's), the cells in batches of CELLS_PER_RUN, as many runs at once as the backend allows."""
    chunks = [image_input] + [cell_inputs[start : start + CELLS_PER_RUN] for start in range(0, len(cell_inputs), CELLS_PER_RUN)]

    def run(chunk: list) -> list[float]:
        with gate:
            return [scores.get("iqa", math.nan) for scores in backend.infer(chunk)]

    with ThreadPoolExecutor(max_workers=max(1, min(backend.parallel_runs, len(chunks)))) as pool:
        return [value for values in pool.map(run, chunks) for value in values]
