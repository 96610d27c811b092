"""Resize and normalise an RGB image to a model's input tensor, as the manifest's ``input`` says."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..package.manifest import CropSpec, InputSpec

Region = tuple[float, float, float, float]  # (left, top, right, bottom) in fractional pixels

_FILTERS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
    "nearest": Image.Resampling.NEAREST,
}


def draft_size(spec: InputSpec) -> int | None:
    """The smallest side a JPEG may be draft-decoded to without changing what the model sees.

    None when the model reads native-resolution crops: those need every decoded pixel.
    """
    if spec.crops is not None:
        return None
    return int(round(max(spec.size) * spec.draft_factor))


def input_bytes(spec: InputSpec) -> int:
    """Bytes of one image's model input, every view counted: the whole-image view plus each
    native-resolution crop (float32, 3 channels); the bundled model's is four 224 x 224 views."""
    height, width = spec.size
    crops = spec.crops
    pixels = height * width + (crops.count * crops.size * crops.size if crops is not None else 0)
    return 3 * pixels * 4


def resize(image: Image.Image, spec: InputSpec, region: Region | None = None) -> Image.Image:
    """Resize (stretch, or center-crop after matching the short side) to ``spec.size``.

    `region`: the part of `image` that holds the picture (see DecodedImage.box); default all of it.
    """
    height, width = spec.size
    box = region
    if spec.resize == "center-crop":
        box = _center_crop_box(region or (0, 0, image.width, image.height), width, height)
    if image.size == (width, height) and box is None:
        return image
    # A box-filter reduce() by an integer factor first, stopping at draft_factor x the target size:
    # the same tolerance the manifest grants JPEG draft decoding, at a fraction of the bicubic cost.
    gap = spec.draft_factor if spec.draft_factor >= 1.0 else None
    return image.resize((width, height), _FILTERS[spec.interpolation], box=box, reducing_gap=gap)


def to_tensor(image: Image.Image, spec: InputSpec, out: np.ndarray | None = None) -> np.ndarray:
    """RGB image of the input size -> float32 CHW array, scaled to [0, 1] and normalised.

    `out`: a float32 [3, H, W] array to write into (e.g. one crop's slot of a batch).
    """
    pixels = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)
    std = np.asarray(spec.std, dtype=np.float32)
    scale = (1.0 / (255.0 * std)).reshape(3, 1, 1)
    bias = (-np.asarray(spec.mean, dtype=np.float32) / std).reshape(3, 1, 1)
    if out is None:
        out = np.empty(pixels.shape, dtype=np.float32)
    # One fused cast-and-scale pass, then the bias in place: the same float32 arithmetic as
    # astype-then-scale, at about a third of the cost (no strided float copy).
    np.multiply(pixels, scale, out=out, casting="unsafe")
    out += bias
    return out


def prepare_pixels(image: Image.Image, spec: InputSpec, region: Region | None = None) -> np.ndarray:
    """The model input for one RGB image: resize then normalise (float32, shape [3, H, W])."""
    return to_tensor(resize(image, spec, region), spec)


def crop_boxes(width: int, height: int, crops: CropSpec) -> list[tuple[int, int, int, int]]:
    """Where the native-resolution crops lie in a width x height image (at least `size` each way).

    Each crop is centred on the middle of its grid cell, moved inwards where it would stick out.
    """
    rows, cols = crops.grid
    cells = crops.cells or tuple((r, c) for r in range(rows) for c in range(cols))
    size = crops.size
    boxes = []
    for row, col in cells:
        top = min(max(round((row + 0.5) * height / rows - size / 2), 0), height - size)
        left = min(max(round((col + 0.5) * width / cols - size / 2), 0), width - size)
        boxes.append((left, top, left + size, top + size))
    return boxes


def working_scale(width: int, height: int, crops: CropSpec) -> float:
    """How much the crops' view of a width x height image is scaled: up until the short side is
    `crops.size`, down until the long side is `crops.max_side` (never below `crops.size` across)."""
    short, long = min(width, height), max(width, height)
    if short < crops.size:
        return crops.size / short
    if crops.max_side is not None and long > crops.max_side:
        return max(crops.max_side / long, crops.size / short)
    return 1.0


def prepare_crops(image: Image.Image, spec: InputSpec) -> np.ndarray:
    """The crops of one RGB image at its working size: float32 [count, 3, size, size], normalised.

    Each crop is resampled straight from its region of the full image, which is the same as
    resizing the whole image to the working size first, at a fraction of the cost.
    """
    crops = spec.crops
    assert crops is not None
    scale = working_scale(image.width, image.height, crops)
    width, height = max(crops.size, round(image.width * scale)), max(crops.size, round(image.height * scale))
    boxes = crop_boxes(width, height, crops)
    tensors = np.empty((len(boxes), 3, crops.size, crops.size), dtype=np.float32)
    sx, sy = image.width / width, image.height / height
    for tensor, (left, top, right, bottom) in zip(tensors, boxes):
        if scale == 1.0:
            view = image.crop((left, top, right, bottom))
        else:
            view = image.resize((crops.size, crops.size), _FILTERS[spec.interpolation], box=(left * sx, top * sy, right * sx, bottom * sy))
        to_tensor(view, spec, out=tensor)
    return tensors


def _center_crop_box(region: Region, dst_w: int, dst_h: int) -> Region:
    # The part of `region` that, scaled to dst, fills it exactly: same as resizing the short side
    # and cropping the centre, done in one resampling pass.
    x0, y0, x1, y1 = region
    src_w, src_h = x1 - x0, y1 - y0
    scale = max(dst_w / src_w, dst_h / src_h)
    crop_w, crop_h = dst_w / scale, dst_h / scale
    left, top = x0 + (src_w - crop_w) / 2, y0 + (src_h - crop_h) / 2
    return (left, top, left + crop_w, top + crop_h)
