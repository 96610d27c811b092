"""Graded synthetic distortions for the iqa teacher: many kinds, five levels each, deterministic.

`apply_distortion(image, kind, level, seed)` returns a new RGB image of the same size. The result
depends only on (image, kind, level, seed); levels 1..5 increase monotonically in severity.
`HELDOUT_KINDS` are never used for training, only to measure how the student generalises.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image
from scipy import ndimage, signal

LEVELS = (1, 2, 3, 4, 5)


def _to_float(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0


def _to_image(array: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8), "RGB")


def _pick(values, level: int):
    return values[level - 1]


def _blur_channels(array: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    pad = max(kernel.shape) // 2 + 1
    padded = np.pad(array, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    out = np.stack([signal.fftconvolve(padded[..., c], kernel, mode="same") for c in range(3)], axis=-1)
    return out[pad:-pad, pad:-pad]


def gaussian_blur(image, level, rng):
    sigma = _pick((0.7, 1.3, 2.1, 3.2, 5.0), level)
    return _to_image(ndimage.gaussian_filter(_to_float(image), (sigma, sigma, 0), mode="reflect"))


def defocus_blur(image, level, rng):
    radius = _pick((1.5, 2.5, 3.5, 5.0, 7.0), level)
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float64)
    return _to_image(_blur_channels(_to_float(image), disk / disk.sum()))


def motion_blur(image, level, rng):
    length = _pick((5, 9, 15, 23, 33), level)
    angle = rng.uniform(0, np.pi)
    size = length if length % 2 else length + 1
    kernel = np.zeros((size, size))
    c = size // 2
    for t in np.linspace(-(length - 1) / 2, (length - 1) / 2, length * 4):
        kernel[int(round(c + t * np.sin(angle))), int(round(c + t * np.cos(angle)))] = 1.0
    return _to_image(_blur_channels(_to_float(image), kernel / kernel.sum()))


def gaussian_noise(image, level, rng):
    sigma = _pick((0.02, 0.04, 0.07, 0.11, 0.17), level)
    x = _to_float(image)
    return _to_image(x + rng.normal(0.0, sigma, x.shape))


def shot_noise(image, level, rng):
    photons = _pick((250, 90, 35, 14, 6), level)
    x = _to_float(image)
    return _to_image(rng.poisson(x * photons) / photons)


def speckle_noise(image, level, rng):
    sigma = _pick((0.06, 0.12, 0.2, 0.3, 0.45), level)
    x = _to_float(image)
    return _to_image(x * (1.0 + rng.normal(0.0, sigma, x.shape)))


def salt_pepper(image, level, rng):
    amount = _pick((0.004, 0.012, 0.03, 0.06, 0.12), level)
    x = _to_float(image).copy()
    hit = rng.random(x.shape[:2])
    x[hit < amount / 2] = 0.0
    x[(hit >= amount / 2) & (hit < amount)] = 1.0
    return _to_image(x)


def colour_noise(image, level, rng):
    """Blotchy chroma noise as from a small sensor: noise on the colour-difference channels, low-passed."""
    sigma = _pick((0.03, 0.06, 0.1, 0.15, 0.22), level)
    x = _to_float(image)
    noise = ndimage.gaussian_filter(rng.normal(0.0, 1.0, x.shape), (1.0, 1.0, 0))
    noise = noise / max(noise.std(), 1e-8) * sigma
    noise -= noise.mean(axis=2, keepdims=True)  # keep luminance roughly unchanged
    return _to_image(x + noise)


def _encode(image: Image.Image, fmt: str, **options) -> Image.Image:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, fmt, **options)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def jpeg(image, level, rng):
    return _encode(image, "JPEG", quality=_pick((45, 25, 15, 9, 5), level))


def webp(image, level, rng):
    return _encode(image, "WEBP", quality=_pick((30, 15, 8, 3, 0), level), method=4)


def jpeg2000(image, level, rng):
    rate = _pick((30, 60, 120, 240, 480), level)
    return _encode(image, "JPEG2000", quality_mode="rates", quality_layers=[rate])


def downsample(image, level, rng):
    factor = _pick((1.6, 2.2, 3.0, 4.2, 6.0), level)
    w, h = image.size
    small = image.resize((max(1, round(w / factor)), max(1, round(h / factor))), Image.BICUBIC)
    return small.resize((w, h), Image.BILINEAR)


def pixelate(image, level, rng):
    block = _pick((2, 3, 5, 8, 12), level)
    w, h = image.size
    small = image.resize((max(1, round(w / block)), max(1, round(h / block))), Image.BOX)
    return small.resize((w, h), Image.NEAREST)


def contrast_loss(image, level, rng):
    keep = _pick((0.8, 0.62, 0.46, 0.32, 0.2), level)
    x = _to_float(image)
    return _to_image(x.mean() + (x - x.mean()) * keep)


def overexposure(image, level, rng):
    gain = _pick((1.3, 1.6, 2.0, 2.6, 3.4), level)
    return _to_image(_to_float(image) * gain)


def underexposure(image, level, rng):
    gain = _pick((0.7, 0.5, 0.35, 0.22, 0.13), level)
    return _to_image(_to_float(image) * gain)


def desaturation(image, level, rng):
    keep = _pick((0.7, 0.5, 0.32, 0.16, 0.0), level)
    x = _to_float(image)
    grey = (x @ np.array([0.299, 0.587, 0.114]))[..., None]
    return _to_image(grey + (x - grey) * keep)


def colour_cast(image, level, rng):
    strength = _pick((0.06, 0.12, 0.2, 0.3, 0.42), level)
    direction = rng.normal(0.0, 1.0, 3)
    direction -= direction.mean()
    direction /= max(np.abs(direction).max(), 1e-8)
    return _to_image(_to_float(image) + direction * strength)


def quantisation(image, level, rng):
    steps = _pick((20, 12, 8, 5, 3), level)
    x = _to_float(image)
    return _to_image(np.round(x * (steps - 1)) / (steps - 1))


def vignetting(image, level, rng):
    strength = _pick((0.3, 0.5, 0.68, 0.82, 0.95), level)
    x = _to_float(image)
    h, w = x.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((yy - (h - 1) / 2) / (h / 2), (xx - (w - 1) / 2) / (w / 2)) / np.sqrt(2)
    return _to_image(x * (1.0 - strength * r[..., None] ** 2))


def guided_smoothing(image, level, rng):
    """Edge-preserving smoothing (self-guided filter, He et al. 2010): flattens texture, keeps edges."""
    radius, eps = _pick(((2, 0.0015), (3, 0.004), (5, 0.01), (7, 0.025), (10, 0.06)), level)
    return _to_image(edge_preserving_smooth(_to_float(image), radius, eps))


def edge_preserving_smooth(x: np.ndarray, radius: int, eps: float, iterations: int = 2) -> np.ndarray:
    """Self-guided filter applied per channel; x is float (H, W, 3) in [0, 1]."""
    size = 2 * radius + 1
    out = x
    for _ in range(iterations):
        mean = ndimage.uniform_filter(out, (size, size, 1), mode="reflect")
        var = ndimage.uniform_filter(out * out, (size, size, 1), mode="reflect") - mean * mean
        a = var / (var + eps)
        b = mean - a * mean
        a = ndimage.uniform_filter(a, (size, size, 1), mode="reflect")
        b = ndimage.uniform_filter(b, (size, size, 1), mode="reflect")
        out = a * out + b
    return out


KINDS: dict[str, Callable[[Image.Image, int, np.random.Generator], Image.Image]] = {
    "gaussian_blur": gaussian_blur,
    "motion_blur": motion_blur,
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "salt_pepper": salt_pepper,
    "colour_noise": colour_noise,
    "jpeg": jpeg,
    "webp": webp,
    "downsample": downsample,
    "pixelate": pixelate,
    "contrast_loss": contrast_loss,
    "overexposure": overexposure,
    "underexposure": underexposure,
    "desaturation": desaturation,
    "colour_cast": colour_cast,
    "quantisation": quantisation,
    "guided_smoothing": guided_smoothing,
    "vignetting": vignetting,
    # held out (see HELDOUT_KINDS)
    "defocus_blur": defocus_blur,
    "speckle_noise": speckle_noise,
    "jpeg2000": jpeg2000,
}

# Cousins of trained kinds (disk vs Gaussian blur, multiplicative vs additive noise, wavelet vs DCT
# compression), so the held-out ladders measure generalisation rather than blind guessing.
HELDOUT_KINDS: tuple[str, ...] = ("defocus_blur", "speckle_noise", "jpeg2000")
TRAIN_KINDS: tuple[str, ...] = tuple(k for k in KINDS if k not in HELDOUT_KINDS)


def apply_distortion(image: Image.Image, kind: str, level: int, seed: int) -> Image.Image:
    """Distort an RGB image with `kind` at severity `level` (1..5); deterministic in (image, kind, level, seed)."""
    if kind not in KINDS:
        raise ValueError(f"unknown distortion kind {kind!r}; choose one of {', '.join(KINDS)}")
    if level not in LEVELS:
        raise ValueError(f"distortion level must be one of {LEVELS}, got {level!r}")
    # The random stream depends on (seed, kind) but not on level, so a ladder keeps one noise
    # pattern / blur direction and only its strength grows.
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(kind.encode())])
    return KINDS[kind](image.convert("RGB"), level, rng)
