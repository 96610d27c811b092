"""Distortion ladders at real photo sizes: the property that `iqa` must fall as damage grows.

Levels are in absolute pixel units (noise sigma in 0-255 levels, blur sigma and motion length in
pixels, resampling factors, JPEG quality), so a ladder means the same damage at 500 px and at
4,000 px, as a person zooming to 100 % would see it. Level 0 is the clean image. The same ladders
serve training (ranking pairs) and acceptance (Spearman of level vs `iqa`, per image).
"""

from __future__ import annotations

import io
import zlib
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage


LADDER_LEVELS = {
    "gaussian_noise": (5, 10, 20, 35, 55),  # sigma, 0-255 levels
    "jpeg": (70, 50, 30, 20, 10),  # quality of a recompression
    "resample": (2, 3, 4, 6, 8),  # down by this factor, then back up (bicubic)
    "gaussian_blur": (1.0, 2.0, 3.0, 5.0, 8.0),  # sigma, pixels
    "motion_blur": (5, 10, 20, 30, 45),  # length, pixels
}
LADDER_KINDS = tuple(LADDER_LEVELS)
WORKING_SIZES = (500, 1000, 2000, 4000)  # long side, pixels


def resize_long_side(image: Image.Image, long_side: int) -> Image.Image:
    """The photo at `long_side` pixels on its long side (Lanczos both ways)."""
    scale = long_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.convert("RGB").resize(size, Image.Resampling.LANCZOS)


def _noise(image: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32)
    noisy = pixels + rng.normal(0.0, sigma, pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8), "RGB")


def _jpeg(image: Image.Image, quality: int, rng: np.random.Generator) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def _resample(image: Image.Image, factor: float, rng: np.random.Generator) -> Image.Image:
    small = (max(1, round(image.width / factor)), max(1, round(image.height / factor)))
    return image.resize(small, Image.Resampling.BICUBIC).resize(image.size, Image.Resampling.BICUBIC)


def _gaussian_blur(image: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(sigma))


def _motion_blur(image: Image.Image, length: int, rng: np.random.Generator) -> Image.Image:
    # A straight-line blur at a random angle: rotate, average along rows, rotate back. Linear in the
    # image size, so a 4,000-px ladder costs about a second, not a minute of 2-D convolution.
    angle = float(rng.uniform(0, 180))
    pad = int(length)  # reflected margin, so the blur never mixes in the rotation's empty corners
    padded = Image.fromarray(np.pad(np.asarray(image), ((pad, pad), (pad, pad), (0, 0)), mode="reflect"), "RGB")
    turned = padded.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    pixels = ndimage.uniform_filter1d(np.asarray(turned, dtype=np.float32), size=int(length), axis=1, mode="reflect")
    back = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB").rotate(-angle, resample=Image.Resampling.BICUBIC, expand=True)
    left, top = (back.width - image.width) // 2, (back.height - image.height) // 2
    return back.crop((left, top, left + image.width, top + image.height))


_APPLY: dict[str, Callable[[Image.Image, float, np.random.Generator], Image.Image]] = {
    "gaussian_noise": _noise,
    "jpeg": _jpeg,
    "resample": _resample,
    "gaussian_blur": _gaussian_blur,
    "motion_blur": _motion_blur,
}


def ladder_image(image: Image.Image, kind: str, level: int, seed: str = "") -> Image.Image:
    """`image` (RGB) with `kind` at `level` (0 = clean, 1..5); deterministic for (image, kind, level, seed)."""
    if kind not in LADDER_LEVELS:
        raise ValueError(f"unknown ladder kind {kind!r}; choose one of {', '.join(LADDER_KINDS)}")
    if level == 0:
        return image
    rng = np.random.default_rng(zlib.crc32(f"{seed}|{kind}|{level}".encode()))
    return _APPLY[kind](image.convert("RGB"), LADDER_LEVELS[kind][level - 1], rng)


def smooth_ladder_image(image: Image.Image, level: int) -> Image.Image:
    """Edge-preserving-ish smoothing for the `ista` ladder: median filter of growing size (0 = clean)."""
    if level == 0:
        return image
    size = (3, 5, 7, 9, 11)[level - 1]
    pixels = np.asarray(image.convert("RGB"))
    return Image.fromarray(ndimage.median_filter(pixels, size=(size, size, 1)), "RGB")
