"""iqa teacher: a full-reference pseudo-MOS from weight-free measures (MS-SSIM, GMSD, HaarPSI).

The distorted image is compared with its clean reference; three measures are mapped to [0, 1]
quality terms and averaged with fixed weights:

    q_haarpsi = HaarPSI                               (1 = identical; already MOS-like)
    q_msssim  = clip((MS-SSIM - 0.4) / 0.6, 0, 1)     (MS-SSIM rarely falls below 0.4 here)
    q_gmsd    = clip(1 - GMSD / 0.3, 0, 1)            (GMSD of heavy distortions is about 0.3)
    iqa       = 100 * (0.5 q_haarpsi + 0.25 q_msssim + 0.25 q_gmsd)

A clean image (no reference, or a reference with identical pixels) scores 100. HaarPSI gets half the
weight because it is the best of the three against human MOS in its paper and it alone sees colour.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .base import clip_score
from .fr_metrics import gmsd, haarpsi, ms_ssim

WEIGHTS = {"haarpsi": 0.5, "ms_ssim": 0.25, "gmsd": 0.25}


def pseudo_mos(ms_ssim_value: float, gmsd_value: float, haarpsi_value: float) -> float:
    """Combine the three full-reference measures into one 0-100 score (100 = identical)."""
    q_msssim = min(1.0, max(0.0, (ms_ssim_value - 0.4) / 0.6))
    q_gmsd = min(1.0, max(0.0, 1.0 - gmsd_value / 0.3))
    q_haarpsi = min(1.0, max(0.0, haarpsi_value))
    combined = WEIGHTS["haarpsi"] * q_haarpsi + WEIGHTS["ms_ssim"] * q_msssim + WEIGHTS["gmsd"] * q_gmsd
    return clip_score(100.0 * combined)


class SyntheticIqaTeacher:
    """Full-reference pseudo-MOS for synthetically distorted copies of clean images."""

    name = "iqa-synthetic"
    axes = ("iqa",)
    full_reference = True  # rates a distorted copy against its clean image; a photo alone gets 100

    def label(self, image: Image.Image, reference: Image.Image | None = None) -> dict[str, float]:
        """iqa 0-100 of `image` against its clean `reference` (100 when there is none)."""
        if reference is None:
            return {"iqa": 100.0}
        distorted = np.asarray(image.convert("RGB"))
        clean = np.asarray(reference.convert("RGB"))
        if distorted.shape != clean.shape:
            raise ValueError(f"reference size {clean.shape[:2]} differs from image size {distorted.shape[:2]}")
        if np.array_equal(distorted, clean):
            return {"iqa": 100.0, "ms_ssim": 1.0, "gmsd": 0.0, "haarpsi": 1.0}
        values = {"ms_ssim": ms_ssim(clean, distorted), "gmsd": gmsd(clean, distorted), "haarpsi": haarpsi(clean, distorted)}
        return {"iqa": pseudo_mos(values["ms_ssim"], values["gmsd"], values["haarpsi"]), **values}

    def describe(self) -> dict:
        """Provenance for the model card."""
        return {
            "name": self.name,
            "axes": list(self.axes),
            "what": "full-reference pseudo-MOS of synthetically distorted images (see export/common/distortions.py)",
            "measures": ["MS-SSIM (Wang et al. 2003)", "GMSD (Xue et al. 2014)", "HaarPSI colour (Reisenhofer et al. 2018)"],
            "implementation": "export/teachers/fr_metrics.py (numpy/scipy, no weights)",
            "weights": "none",
            "licence": "Apache-2.0 (this repository's own code)",
            "mapping": "100 * (0.5*HaarPSI + 0.25*clip((MS-SSIM-0.4)/0.6,0,1) + 0.25*clip(1-GMSD/0.3,0,1)); clean image = 100",
        }
