"""A known-answer check of the InternVL vision path: does llama.cpp still compute what InternViT computes?

The GGUF export reorders the ViT's position embeddings to [patches, CLS] because the pinned llama.cpp's
InternVL graph appends CLS after the patches (docs/gguf.md, "The InternVL vision fix"). That is right
only for that graph: a llama.cpp that puts CLS first again would give every patch its neighbour's
position, and the scores would drift without any error. So the export runs a fixed probe image through
the torch reference (InternViT, pixel shuffle, mlp1), writes a sketch of the image features into the
mmproj's metadata, and the runtime recomputes that sketch through llama.cpp when it loads the package.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POSITION_ORDER_KEY = "perceptlite.vision.position_embedding_order"
POSITION_ORDER = "patches,cls"  # what the export wrote into v.position_embd.weight
PROBE_KEY = "perceptlite.vision.probe_sketch"
LLAMA_CPP_KEY = "perceptlite.vision.llama_cpp_python"  # the llama-cpp-python the export was made and tested with
# Measured on the tiny checkpoint (tests/backends/test_gguf_position_guard.py): the F16 mmproj with the fix
# agrees with the reference at correlation 1.0000 and relative error 0.0003; with the rows in InternViT's own
# order (what a graph that puts CLS first would see) at 0.9947 and 0.099. The bounds sit between the two.
MIN_CORRELATION = 0.999
MAX_RELATIVE_ERROR = 0.05


def probe_pixels(size: int = 448) -> np.ndarray:
    """The probe image, (size, size, 3) uint8: two ramps and a checkerboard of 8 x 8 blocks, so that every
    patch position looks different. Integer arithmetic only: the same bytes on every platform."""
    y, x = np.mgrid[0:size, 0:size]
    block = size // 8
    red = x * 255 // (size - 1)
    green = y * 255 // (size - 1)
    blue = ((x // block + y // block) % 2) * 160 + 48
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def _projection(width: int) -> np.ndarray:
    # A fixed pseudo-random direction in feature space (Knuth's multiplicative hash: platform-independent).
    codes = (np.arange(width, dtype=np.uint64) * np.uint64(2654435761)) % np.uint64(1000)
    return (codes.astype(np.float64) / 999.0 - 0.5) / np.sqrt(width)


def feature_sketch(features: np.ndarray) -> np.ndarray:
    """(image tokens, hidden) image features -> one number per image token (their projection on a fixed direction)."""
    features = np.asarray(features, dtype=np.float64)
    return features @ _projection(features.shape[-1])


@dataclass(frozen=True)
class ProbeAgreement:
    correlation: float
    relative_error: float

    @property
    def holds(self) -> bool:
        return self.correlation >= MIN_CORRELATION and self.relative_error <= MAX_RELATIVE_ERROR


def compare_sketches(measured: np.ndarray, expected: np.ndarray) -> ProbeAgreement:
    """How well the sketch llama.cpp gives matches the one the export recorded."""
    measured, expected = np.asarray(measured, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if measured.shape != expected.shape or measured.size < 2:
        return ProbeAgreement(float("nan"), float("inf"))
    correlation = float(np.corrcoef(measured, expected)[0, 1])
    relative_error = float(np.linalg.norm(measured - expected) / max(np.linalg.norm(expected), 1e-12))
    return ProbeAgreement(correlation if np.isfinite(correlation) else float("nan"), relative_error)
