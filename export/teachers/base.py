"""The teacher interface: anything that rates an image on one or more of iaa / iqa / ista, 0-100."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from PIL import Image

AXES = ("iaa", "iqa", "ista")


@runtime_checkable
class Teacher(Protocol):
    """A labeller for one or more axes.

    `label` returns a dict with one float in [0, 100] per axis in `axes` (higher is better). It may add
    diagnostic floats under other keys (e.g. the raw measures behind a score); the labeller keeps those
    under the record's `teachers` field. `reference` is the clean image when `image` is a distorted copy
    of it; full-reference teachers need it, the others ignore it.
    """

    name: str
    axes: tuple[str, ...]

    def label(self, image: Image.Image, reference: Image.Image | None = None) -> dict[str, float]:
        """Scores 0-100 for each axis in `axes` (plus optional diagnostic keys)."""
        ...

    def describe(self) -> dict:
        """Provenance for the model card: what it is, weights source, licence, mapping to 0-100."""
        ...


def clip_score(value: float) -> float:
    """Clamp to the 0-100 score range as a plain float."""
    return float(min(100.0, max(0.0, value)))
