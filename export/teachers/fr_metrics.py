"""Weight-free full-reference image quality measures: MS-SSIM, GMSD and HaarPSI, in numpy/scipy.

All functions take two RGB images as uint8 or float arrays of shape (H, W, 3) on the 0-255 scale,
the reference first, and follow the published definitions:
- MS-SSIM: Wang, Simoncelli, Bovik 2003 (luminance, 5 scales, 11x11 Gaussian window, sigma 1.5).
- GMSD: Xue, Zhang, Mou, Bovik 2014 (Prewitt gradients on the 2x-averaged luminance, c = 170).
- HaarPSI: Reisenhofer, Bosse, Kutyniok, Wiegand 2018 (colour version on YIQ, C = 30, alpha = 4.2).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an (H, W, 3) array, same scale as the input."""
    rgb = np.asarray(rgb, dtype=np.float64)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _average_downsample(plane: np.ndarray) -> np.ndarray:
    """2x2 mean followed by decimation by 2 (crops an odd last row/column)."""
    h, w = plane.shape[0] // 2 * 2, plane.shape[1] // 2 * 2
    p = plane[:h, :w]
    return (p[0::2, 0::2] + p[1::2, 0::2] + p[0::2, 1::2] + p[1::2, 1::2]) / 4.0


def _ssim_terms(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean SSIM and mean contrast-structure term of two luminance planes (0-255)."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(p):
        return ndimage.gaussian_filter(p, 1.5, truncate=3.5, mode="reflect")

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    return float(np.mean(lum * cs)), float(np.mean(cs))


def ms_ssim(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Multi-scale SSIM on luminance; 1.0 for identical images, lower is worse."""
    x, y = luminance(reference), luminance(distorted)
    values = []
    for scale, weight in enumerate(MS_SSIM_WEIGHTS):
        ssim, cs = _ssim_terms(x, y)
        last = scale == len(MS_SSIM_WEIGHTS) - 1 or min(x.shape) < 22
        # Negative contrast-structure terms would make fractional powers undefined; clamp them.
        values.append((max(ssim if last else cs, 0.0), weight))
        if last:
            break
        x, y = _average_downsample(x), _average_downsample(y)
    total_weight = sum(w for _, w in values)
    return float(np.prod([v ** (w / total_weight) for v, w in values]))


def gmsd(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Gradient magnitude similarity deviation; 0.0 for identical images, higher is worse."""
    x = _average_downsample(luminance(reference))
    y = _average_downsample(luminance(distorted))
    prewitt = np.array([1.0, 0.0, -1.0]) / 3.0
    ones = np.ones(3)

    def magnitude(p):
        gx = ndimage.correlate1d(ndimage.correlate1d(p, prewitt, axis=1, mode="nearest"), ones, axis=0, mode="nearest")
        gy = ndimage.correlate1d(ndimage.correlate1d(p, prewitt, axis=0, mode="nearest"), ones, axis=1, mode="nearest")
        return np.sqrt(gx * gx + gy * gy)

    mx, my = magnitude(x), magnitude(y)
    c = 170.0
    gms = (2 * mx * my + c) / (mx * mx + my * my + c)
    return float(np.std(gms))


def _yiq(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rgb = np.asarray(rgb, dtype=np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    i = 0.596 * r - 0.274 * g - 0.322 * b
    q = 0.211 * r - 0.523 * g + 0.312 * b
    return y, i, q


def _haar_responses(plane: np.ndarray, scales: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    """Absolute horizontal and vertical Haar wavelet responses for scales 1..scales."""
    responses = []
    for k in range(1, scales + 1):
        n = 2**k
        step = np.concatenate([-np.ones(n // 2), np.ones(n // 2)])
        box = np.ones(n)
        norm = 2.0 ** (-k)
        along_rows = ndimage.correlate1d(ndimage.correlate1d(plane, step, axis=0, mode="constant"), box, axis=1, mode="constant")
        along_cols = ndimage.correlate1d(ndimage.correlate1d(plane, step, axis=1, mode="constant"), box, axis=0, mode="constant")
        responses.append((np.abs(along_rows) * norm, np.abs(along_cols) * norm))
    return responses


def haarpsi(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Haar wavelet-based perceptual similarity index (colour); 1.0 for identical images."""
    c, alpha = 30.0, 4.2
    planes_ref, planes_dis = _yiq(reference), _yiq(distorted)
    # The published method works on 2x2-averaged, 2x-decimated images.
    planes_ref = [_average_downsample(p) for p in planes_ref]
    planes_dis = [_average_downsample(p) for p in planes_dis]

    haar_ref = _haar_responses(planes_ref[0])
    haar_dis = _haar_responses(planes_dis[0])

    similarities, weights = [], []
    for orientation in range(2):
        sim = (
            sum(
                (2 * haar_ref[k][orientation] * haar_dis[k][orientation] + c)
                / (haar_ref[k][orientation] ** 2 + haar_dis[k][orientation] ** 2 + c)
                for k in range(2)
            )
            / 2.0
        )
        similarities.append(sim)
        weights.append(np.maximum(haar_ref[2][orientation], haar_dis[2][orientation]))

    def local_mean(p):
        return ndimage.uniform_filter(p, size=2, mode="constant")

    i_ref, q_ref = local_mean(planes_ref[1]), local_mean(planes_ref[2])
    i_dis, q_dis = local_mean(planes_dis[1]), local_mean(planes_dis[2])
    sim_i = (2 * np.abs(i_ref) * np.abs(i_dis) + c) / (i_ref**2 + i_dis**2 + c)
    sim_q = (2 * np.abs(q_ref) * np.abs(q_dis) + c) / (q_ref**2 + q_dis**2 + c)
    similarities.append((sim_i + sim_q) / 2.0)
    weights.append((weights[0] + weights[1]) / 2.0)

    sim = np.stack(similarities)
    weight = np.stack(weights)
    pooled = np.sum(_sigmoid(alpha * sim) * weight) / max(np.sum(weight), 1e-12)
    pooled = min(max(pooled, 1e-12), 1 - 1e-12)
    return float((np.log(pooled / (1 - pooled)) / alpha) ** 2)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
