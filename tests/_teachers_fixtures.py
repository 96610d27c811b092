"""Shared helpers for the teacher tests: a few real corpus photos and synthetic scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
# A landscape from BSDS500 and two ImageNet photos with plenty of detail.
PHOTOS = ("bsds500/val/101085.jpg", "imagenet-sample/n01443537_goldfish.JPEG", "bsds500/test/100039.jpg")


def corpus_photo(relative: str, max_side: int = 256) -> Image.Image:
    """A corpus photo, RGB, downscaled so tests stay fast."""
    path = CORPUS / relative
    if not path.is_file():
        pytest.skip(f"{path} is missing (CI places ../shared beside the clone)")
    image = Image.open(path).convert("RGB")
    image.thumbnail((max_side, max_side), Image.BICUBIC)
    return image


def sky_gradient(size=(320, 240)) -> Image.Image:
    """A clear-sky-like smooth vertical colour gradient."""
    w, h = size
    t = np.linspace(0.0, 1.0, h)[:, None, None]
    top, bottom = np.array([70, 120, 200]), np.array([180, 210, 240])
    return Image.fromarray(np.broadcast_to(top + (bottom - top) * t, (h, w, 3)).astype(np.uint8))


def brick_wall(size=(320, 240), seed=0) -> Image.Image:
    """Brickwork: staggered bricks with mortar joints, per-brick tone and fine surface grain."""
    w, h = size
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3))
    mortar = np.array([200, 195, 185]) / 255
    bh, bw = 16, 36
    for row in range(h // bh + 1):
        offset = (bw // 2) * (row % 2)
        for col in range(-1, w // bw + 2):
            tone = np.array([0.62, 0.28, 0.2]) * rng.uniform(0.75, 1.15)
            y0, x0 = row * bh, col * bw + offset
            img[max(y0, 0) : y0 + bh, max(x0, 0) : max(x0 + bw, 0)] = tone
            img[max(y0, 0) : y0 + 2, max(x0, 0) : max(x0 + bw, 0)] = mortar
            img[max(y0, 0) : y0 + bh, max(x0, 0) : max(x0 + 2, 0)] = mortar
    img += rng.normal(0, 0.05, (h, w, 1)) * (1 + 0 * img)
    return Image.fromarray(np.clip(img * 255, 0, 255).astype(np.uint8))


def foliage(size=(320, 240), seed=0) -> Image.Image:
    """Foliage-like clutter: hundreds of small overlapping leaf ellipses in greens."""
    from PIL import ImageDraw

    w, h = size
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, (40, 70, 30))
    draw = ImageDraw.Draw(image)
    for _ in range(1400):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = rng.uniform(2, 7), rng.uniform(1, 4)
        g = int(rng.uniform(60, 200))
        draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=(int(g * 0.4), g, int(g * 0.3)))
    return image


def add_noise(image: Image.Image, sigma: float, seed: int = 0) -> Image.Image:
    """Additive Gaussian noise, sigma on the 0-1 scale."""
    x = np.asarray(image, dtype=np.float64) / 255
    x = x + np.random.default_rng(seed).normal(0, sigma, x.shape)
    return Image.fromarray(np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8))
