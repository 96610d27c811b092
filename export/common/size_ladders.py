"""Distortion ladders at real photo sizes: the property that `iqa` must fall as damage grows.

Levels are in absolute pixel units (noise sigma in 0-255 levels, blur sigma and motion length in
pixels, resampling factors, JPEG quality), so a ladder means the same damage at 500 px and at
4,000 px, as a person zooming to 100 % would see it. Level 0 is the clean image. The same ladders
serve training (ranking pairs) and acceptance (Spearman of level vs `iqa`, per image).
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

# Each ladder starts at damage a careful viewer only just sees (JPEG quality 90, noise sigma 3): a head
# that learnt quality from phone photos must still rank those below the clean photo.
LADDER_LEVELS = {
    "gaussian_noise": (3, 6, 12, 24, 40),  # sigma, 0-255 levels
    "jpeg": (90, 70, 50, 30, 10),  # quality of a recompression
    "resample": (2, 3, 4, 6, 8),  # down by this factor, then back up (bicubic)
    "gaussian_blur": (1.0, 2.0, 3.0, 5.0, 8.0),  # sigma, pixels
    "motion_blur": (5, 10, 20, 30, 45),  # length, pixels
    "pixelate": (2, 3, 4, 6, 8),  # blocks of this many pixels (box down, nearest up)
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
    back = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB").rotate(
        -angle, resample=Image.Resampling.BICUBIC, expand=True
    )
    left, top = (back.width - image.width) // 2, (back.height - image.height) // 2
    return back.crop((left, top, left + image.width, top + image.height))


def _pixelate(image: Image.Image, factor: float, rng: np.random.Generator) -> Image.Image:
    small = (max(1, round(image.width / factor)), max(1, round(image.height / factor)))
    return image.resize(small, Image.Resampling.BOX).resize(image.size, Image.Resampling.NEAREST)


def _sensor_noise(image: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    # Photon (signal-dependent) plus read noise, stronger in the shadows' chroma, as a small sensor at high ISO:
    # `sigma` is the standard deviation at mid grey, in 0-255 levels.
    pixels = np.asarray(image, dtype=np.float32)
    level = np.sqrt(np.clip(pixels, 0, 255) / 128.0 + 0.25) * sigma / np.sqrt(1.25)
    luma = rng.normal(0.0, 1.0, pixels.shape[:2] + (1,)).astype(np.float32)
    chroma = rng.normal(0.0, 0.5, pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(pixels + level * (luma + chroma)), 0, 255).astype(np.uint8), "RGB")


def _defocus(image: Image.Image, radius: float, rng: np.random.Generator) -> Image.Image:
    # A disc (pillbox) kernel: what an out-of-focus lens does, unlike a Gaussian's soft tail.
    r = max(1, int(round(radius)))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disc = (xx * xx + yy * yy <= r * r).astype(np.float32)
    disc /= disc.sum()
    pixels = np.asarray(image, dtype=np.float32)
    blurred = np.stack([ndimage.convolve(pixels[..., c], disc, mode="reflect") for c in range(3)], axis=-1)
    return Image.fromarray(np.clip(np.rint(blurred), 0, 255).astype(np.uint8), "RGB")


_APPLY: dict[str, Callable[[Image.Image, float, np.random.Generator], Image.Image]] = {
    "gaussian_noise": _noise,
    "jpeg": _jpeg,
    "resample": _resample,
    "gaussian_blur": _gaussian_blur,
    "motion_blur": _motion_blur,
    "pixelate": _pixelate,
    "sensor_noise": _sensor_noise,
    "defocus": _defocus,
}
DAMAGE_KINDS = tuple(_APPLY)


def damage(image: Image.Image, kind: str, amount: float, rng: np.random.Generator) -> Image.Image:
    """`image` (RGB) with `kind` at `amount`, in the units of LADDER_LEVELS (sensor noise: sigma at mid grey;
    defocus: disc radius in pixels); the noise and the motion direction come from `rng`."""
    if kind not in _APPLY:
        raise ValueError(f"unknown damage kind {kind!r}; choose one of {', '.join(DAMAGE_KINDS)}")
    return _APPLY[kind](image.convert("RGB"), amount, rng)


def ladder_image(image: Image.Image, kind: str, level: int, seed: str = "") -> Image.Image:
    """`image` (RGB) with `kind` at `level` (0 = clean, 1..5); deterministic for (image, kind, level, seed)."""
    if kind not in LADDER_LEVELS:
        raise ValueError(f"unknown ladder kind {kind!r}; choose one of {', '.join(LADDER_KINDS)}")
    if level == 0:
        return image
    rng = np.random.default_rng(zlib.crc32(f"{seed}|{kind}|{level}".encode()))
    return damage(image, kind, LADDER_LEVELS[kind][level - 1], rng)


def smooth_ladder_image(image: Image.Image, level: int) -> Image.Image:
    """Edge-preserving-ish smoothing for the `ista` ladder: median filter of growing size (0 = clean)."""
    if level == 0:
        return image
    size = (3, 5, 7, 9, 11)[level - 1]
    pixels = np.asarray(image.convert("RGB"))
    return Image.fromarray(ndimage.median_filter(pixels, size=(size, size, 1)), "RGB")
