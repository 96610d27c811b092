"""What the iqa network trains on: random crops of rated photos, and damaged crops of unrated ones.

Every crop is cut as the runtime cuts crops (perceptlite.backends.preprocess): the photo at its working size
(its own pixels up to the package's `max_side`, as if resized to it above), 224 px, normalised with mean and
std 0.5. A damaged crop is damaged where a person would see the damage: at the size the photo is stored
at, before the working size shrinks it, so light JPEG of a 4,000-px photo is as faint as it is to the model
at run time. Only the crop's own region (plus a margin) is resized and damaged, which keeps a 4,000-px
photo's crop as cheap as a 500-px one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from export.common.size_ladders import damage

CROP = 224
MAX_SIDE = 1536
MEAN_STD = 0.5
MARGIN = 16  # pixels at the stored size around a crop, so blur and motion see real neighbours at its edges

# Damage amounts are drawn log-uniformly between a faint and a strong end, in size_ladders' units.
DAMAGE_RANGES: dict[str, tuple[float, float]] = {
    "jpeg": (92.0, 8.0),  # quality: from light to heavy
    "gaussian_noise": (2.0, 40.0),
    "sensor_noise": (2.0, 30.0),
    "pixelate": (1.6, 8.0),
    "resample": (1.6, 8.0),
    "gaussian_blur": (0.6, 8.0),
    "defocus": (1.0, 8.0),
    "motion_blur": (3.0, 40.0),
}
MIXTURE_SHARE = 0.25  # share of damaged crops that get two kinds in a row (a blurred photo, then compressed)


def to_input(crop: Image.Image) -> np.ndarray:
    """An RGB 224-px crop -> float32 [3, 224, 224], normalised as the package's input spec."""
    pixels = np.asarray(crop.convert("RGB"), dtype=np.float32).transpose(2, 0, 1)
    return (pixels / 255.0 - MEAN_STD) / MEAN_STD


def working_scale(width: int, height: int) -> float:
    """The runtime's scale of a width x height photo's crops (perceptlite.backends.preprocess.working_scale)."""
    short, long = min(width, height), max(width, height)
    if short < CROP:
        return CROP / short
    if long > MAX_SIDE:
        return max(MAX_SIDE / long, CROP / short)
    return 1.0


def random_crops(image: Image.Image, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` random crops of a photo as stored, at its working size, half of them mirrored: [count, 3, 224, 224]."""
    scale = working_scale(image.width, image.height)
    side = CROP / scale  # the crop's side in stored pixels
    out = np.empty((count, 3, CROP, CROP), np.float32)
    for index in range(count):
        left = rng.uniform(0, image.width - side)
        top = rng.uniform(0, image.height - side)
        box = (left, top, left + side, top + side)
        crop = image.crop(tuple(round(v) for v in box)) if scale == 1.0 else image.resize((CROP, CROP), Image.Resampling.BICUBIC, box=box)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out[index] = to_input(crop)
    return out


@dataclass(frozen=True)
class DamageSpec:
    kinds: tuple[str, ...]
    amounts: tuple[float, ...]

    def describe(self) -> str:
        return "+".join(f"{k}:{a:.3g}" for k, a in zip(self.kinds, self.amounts))


def draw_kinds(rng: np.random.Generator, kinds: tuple[str, ...] = tuple(DAMAGE_RANGES)) -> tuple[str, ...]:
    """One random damage kind, sometimes followed by a second one (a mixture)."""
    first = str(rng.choice(kinds))
    if rng.random() < MIXTURE_SHARE:
        return first, str(rng.choice([k for k in kinds if k != first]))
    return (first,)


def damage_at(kinds: tuple[str, ...], strength: float) -> DamageSpec:
    """`kinds` at `strength` in [0, 1]: 0 the faint end of each kind's range, 1 the strong end (log scale)."""
    amounts = []
    for kind in kinds:
        faint, strong = DAMAGE_RANGES[kind]
        amounts.append(float(np.exp(np.log(faint) + strength * (np.log(strong) - np.log(faint)))))
    return DamageSpec(kinds, tuple(amounts))


Box = tuple[float, float, float, float]


def stored_region(image: Image.Image, stored_long_side: int, rng: np.random.Generator) -> tuple[Image.Image, Box, float]:
    """A random crop's region of `image` as if it were stored at `stored_long_side` px, with a margin:
    (that region at the stored size, the crop's box inside it, the runtime's working scale there)."""
    factor = stored_long_side / max(image.size)
    stored_w, stored_h = max(CROP, round(image.width * factor)), max(CROP, round(image.height * factor))
    scale = working_scale(stored_w, stored_h)
    side = CROP / scale
    left = rng.uniform(0, stored_w - side)
    top = rng.uniform(0, stored_h - side)
    x0, y0 = max(0, int(left) - MARGIN), max(0, int(top) - MARGIN)
    x1, y1 = min(stored_w, int(left + side) + 1 + MARGIN), min(stored_h, int(top + side) + 1 + MARGIN)
    sx, sy = image.width / stored_w, image.height / stored_h
    region = image.resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS, box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy))
    return region, (left - x0, top - y0, left - x0 + side, top - y0 + side), scale


def view_of(region: Image.Image, box: Box, scale: float) -> Image.Image:
    """The runtime's 224-px view of the crop `box` of a (possibly damaged) stored region."""
    if scale == 1.0:
        left, top = min(round(box[0]), region.width - CROP), min(round(box[1]), region.height - CROP)
        return region.crop((left, top, left + CROP, top + CROP))
    return region.resize((CROP, CROP), Image.Resampling.BICUBIC, box=box)


def damaged_views(image: Image.Image, stored_long_side: int, specs: list[DamageSpec], rng: np.random.Generator) -> np.ndarray:
    """One random crop position of `image` stored at `stored_long_side` px: its clean view, then each of `specs`
    applied at the stored size: [1 + len(specs), 3, 224, 224]."""
    region, box, scale = stored_region(image, stored_long_side, rng)
    views = [view_of(region, box, scale)]
    for spec in specs:
        damaged = region
        for kind, amount in zip(spec.kinds, spec.amounts):
            damaged = damage(damaged, kind, amount, rng)
        views.append(view_of(damaged, box, scale))
    return np.stack([to_input(v) for v in views])
