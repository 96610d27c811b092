"""perceptlite: fast, offline perceptual scoring of images.

Three scores per image, each 0-100 (higher is better): aesthetics (``iaa``), technical quality
(``iqa``) and structure & texture richness (``ista``).
"""

from __future__ import annotations

from . import offline  # noqa: F401  (first: sets ORT_DISABLE_TELEMETRY before anything imports onnxruntime)
from .maps import QualityMap, QualityMapError
from .records import AXES, ScoreResult
from .scorer import ScoreOptions, Scorer

__all__ = ["AXES", "QualityMap", "QualityMapError", "Scorer", "ScoreOptions", "ScoreResult", "__version__"]


def __getattr__(name: str):
    # Looked up on demand: importlib.metadata costs more start-up time than the rest of the CLI.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("perceptlite")
        except PackageNotFoundError:  # a source tree that is not installed
            return "0.0.0+source"
    raise AttributeError(f"module 'perceptlite' has no attribute {name!r}")
