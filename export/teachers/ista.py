"""ista teacher: richness of structure and texture, measured on the image itself, calibrated on the corpus.

The measure (all on BT.601 luminance in [0, 1], resized so the long side is 384 px):
1. Estimate the noise level sigma_n robustly (median absolute response of Immerkaer's Laplacian-difference
   mask), so noise is not mistaken for texture.
2. Denoise mildly (Gaussian, sigma 1 px).
3. At three scales (box-downsampled by 1, 2, 4) take the Sobel gradient energy, average it over a
   small neighbourhood, subtract what noise of level sigma_n alone would leave at that scale (measured
   once on synthetic white noise), and turn the remainder into a local gradient amplitude g.
4. Per scale, richness = mean over pixels of log(1 + g / 0.01): the log rewards how much of the
   image carries structure (coverage) rather than how strong its single strongest edge is.
5. raw = mean of the three per-scale values; the 0-100 score is the raw value's position in the
   corpus distribution (piecewise-linear through stored percentiles, see `ista_calibration.json`,
   written by `python -m export.teachers.ista --calibrate ../shared/corpus`).

6. A distorted copy labelled with its clean reference scores min(own value, reference value): distortions
   remove structure (blur, smoothing, contrast loss) but never add it; impulses, chroma noise and
   blocking would otherwise read as texture.

Consequences: edge-preserving smoothing removes fine texture and lowers the score; noise on a flat
image is subtracted; foliage, brickwork and crowds (structure everywhere, at every scale) rate above
sky, plain walls and studio backdrops.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from export.common.images import discover_images, load_image

from .base import clip_score

WORKING_SIDE = 384
SCALES = (1, 2, 4)
AMPLITUDE_UNIT = 0.01
CALIBRATION_FILE = Path(__file__).with_name("ista_calibration.json")
_IMMERKAER = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


def _working_luminance(image: Image.Image) -> np.ndarray:
    image = image.convert("RGB")
    scale = WORKING_SIDE / max(image.size)
    if abs(scale - 1.0) > 1e-3:
        size = (max(8, round(image.width * scale)), max(8, round(image.height * scale)))
        image = image.resize(size, Image.BICUBIC)
    rgb = np.asarray(image, dtype=np.float64) / 255.0
    return rgb @ np.array([0.299, 0.587, 0.114])


def noise_sigma(luma: np.ndarray) -> float:
    """Robust estimate of additive white noise std (Immerkaer's mask, median absolute response)."""
    response = ndimage.correlate(luma, _IMMERKAER, mode="reflect")[1:-1, 1:-1]
    # For white noise the mask's response has std 6 sigma; median(|x|) = 0.6745 std for a Gaussian.
    return float(np.median(np.abs(response)) / 0.6745 / 6.0)


def _box_downsample(plane: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return plane
    h, w = plane.shape[0] // factor * factor, plane.shape[1] // factor * factor
    return plane[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def _local_gradient_energy(plane: np.ndarray) -> np.ndarray:
    gx = ndimage.sobel(plane, axis=1, mode="reflect") / 8.0
    gy = ndimage.sobel(plane, axis=0, mode="reflect") / 8.0
    return ndimage.uniform_filter(gx * gx + gy * gy, size=3, mode="reflect")


def _denoise(luma: np.ndarray) -> np.ndarray:
    return ndimage.gaussian_filter(luma, 1.0, mode="reflect")


@lru_cache(maxsize=1)
def _unit_noise_energy() -> tuple[float, ...]:
    """Mean local gradient energy that unit-variance white noise leaves at each scale after denoising."""
    noise = np.random.default_rng(0).normal(0.0, 1.0, (256, 256))
    smoothed = _denoise(noise)
    return tuple(float(_local_gradient_energy(_box_downsample(smoothed, s)).mean()) for s in SCALES)


def raw_richness(image: Image.Image) -> tuple[float, dict[str, float]]:
    """Uncalibrated richness value and its parts (noise estimate, per-scale richness)."""
    luma = _working_luminance(image)
    sigma = noise_sigma(luma)
    smoothed = _denoise(luma)
    parts = {"noise_sigma": sigma}
    per_scale = []
    for scale, unit_energy in zip(SCALES, _unit_noise_energy()):
        energy = _local_gradient_energy(_box_downsample(smoothed, scale))
        # Subtract twice the expected noise energy: a margin for the estimate's own error.
        amplitude = np.sqrt(np.maximum(energy - 2.0 * unit_energy * sigma * sigma, 0.0))
        value = float(np.mean(np.log1p(amplitude / AMPLITUDE_UNIT)))
        parts[f"scale_{scale}"] = value
        per_scale.append(value)
    return float(np.mean(per_scale)), parts


def load_calibration(path: Path = CALIBRATION_FILE) -> dict:
    """The stored corpus percentiles that map raw values to 0-100."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run: python -m export.teachers.ista --calibrate ../shared/corpus")
    return json.loads(path.read_text())


def calibrated_score(raw: float, calibration: dict) -> float:
    """Position of `raw` in the corpus distribution, 0-100, extended linearly past the stored range."""
    qs = np.asarray(calibration["percentiles"], dtype=np.float64)
    values = np.asarray(calibration["values"], dtype=np.float64)
    if raw < values[0]:
        slope = (qs[1] - qs[0]) / max(values[1] - values[0], 1e-9)
        return clip_score(qs[0] + (raw - values[0]) * slope)
    if raw > values[-1]:
        slope = (qs[-1] - qs[-2]) / max(values[-1] - values[-2], 1e-9)
        return clip_score(qs[-1] + (raw - values[-1]) * slope)
    return clip_score(float(np.interp(raw, values, qs)))


class StructureTextureTeacher:
    """Structure and texture richness (ista) from noise-corrected multi-scale gradient statistics."""

    name = "ista"
    axes = ("ista",)

    def __init__(self, calibration_path: Path = CALIBRATION_FILE) -> None:
        self.calibration_path = calibration_path
        self.calibration = load_calibration(calibration_path)
        self._cached_reference: tuple[str, float] | None = None

    def score(self, image: Image.Image) -> tuple[float, dict[str, float]]:
        """Calibrated ista of one image and its raw parts."""
        raw, parts = raw_richness(image)
        return calibrated_score(raw, self.calibration), {"ista_raw": raw, **parts}

    def label(self, image: Image.Image, reference: Image.Image | None = None) -> dict[str, float]:
        """ista 0-100; for a distorted copy, never more than its clean `reference` scores."""
        value, parts = self.score(image)
        if reference is None:
            return {"ista": value, **parts}
        # A distortion never adds real structure: noise, impulses and blocking only look like texture.
        reference_value = self._reference_score(reference)
        return {"ista": min(value, reference_value), "ista_image": value, "ista_reference": reference_value, **parts}

    def _reference_score(self, reference: Image.Image) -> float:
        # The labeller passes one clean image for several distorted copies; score it once.
        digest = hashlib.sha1(reference.tobytes()).hexdigest() + str(reference.size)
        if self._cached_reference is None or self._cached_reference[0] != digest:
            self._cached_reference = (digest, self.score(reference)[0])
        return self._cached_reference[1]

    def describe(self) -> dict:
        """Provenance for the model card."""
        return {
            "name": self.name,
            "axes": list(self.axes),
            "what": (
                "richness of structure and texture: noise-corrected multi-scale (1, 2, 4) gradient amplitude, "
                "mean of log(1 + g / 0.01), on luminance at 384 px long side after a sigma-1 Gaussian denoise"
            ),
            "implementation": "export/teachers/ista.py (numpy/scipy, no weights)",
            "weights": "none",
            "licence": "Apache-2.0 (this repository's own code)",
            "mapping": (
                "piecewise-linear through corpus percentiles of the raw value (0-100), linear beyond; "
                "a distorted copy scores min(its own value, its clean reference's value)"
            ),
            "calibration": {k: self.calibration.get(k) for k in ("command", "images", "max_side")},
        }


def calibrate(roots: list[Path], max_side: int) -> dict:
    """Raw values over every image under `roots` -> percentile table."""
    raws = []
    files = [f for root in roots for f in discover_images(root)]
    for path in files:
        try:
            raws.append(raw_richness(load_image(path, max_side))[0])
        except (OSError, ValueError) as exc:
            print(f"warning: skipping {path}: {exc}", file=sys.stderr)
    percentiles = [0.5, 1, 2.5] + list(range(5, 96, 5)) + [97.5, 99, 99.5]
    return {
        "percentiles": percentiles,
        "values": [float(v) for v in np.percentile(raws, percentiles)],
        "images": len(raws),
        "max_side": max_side,
        "command": "python -m export.teachers.ista --calibrate " + " ".join(str(r) for r in roots),
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: recompute the corpus calibration table."""
    parser = argparse.ArgumentParser(prog="python -m export.teachers.ista", description=__doc__.splitlines()[0])
    parser.add_argument("--calibrate", nargs="+", type=Path, required=True, metavar="DIR", help="image folders to calibrate on")
    parser.add_argument("--max-side", type=int, default=512, help="downscale images to this long side first, as the labeller does")
    parser.add_argument("--out", type=Path, default=CALIBRATION_FILE, help="where to write the calibration JSON")
    args = parser.parse_args(argv)
    table = calibrate(args.calibrate, args.max_side)
    args.out.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {args.out} from {table['images']} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
