"""Records out: the data model here (the three axes, the score record's fields, the result of scoring
one image), score files read and written in one place (files: ``read``/``write``), and their formats:
text (table, JSON, JSONL, CSV), Parquet, and how file names are written (names).

Every column list in perceptlite (writers, score files, Parquet, the cache, ``--where``, the report,
``eval``) is derived from :data:`AXES` and :data:`FIELDS` here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

AXES = ("iaa", "iqa", "ista")
AXIS_NAMES = {"iaa": "aesthetics", "iqa": "technical quality", "ista": "structure & texture"}
SIZE_FIELDS = ("width", "height")
FIELDS = ("path", *AXES, *SIZE_FIELDS, "error")  # a score record, in output order
NUMERIC_FIELDS = (*AXES, *SIZE_FIELDS)  # what --where can compare
DECIMALS = 2  # scores in written records are rounded to this many decimals


@dataclass(frozen=True)
class ScoreResult:
    """Scores for one image (0-100, higher is better), or an error with the scores left None."""

    path: str | None
    iaa: float | None
    iqa: float | None
    ista: float | None
    width: int | None
    height: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def file(self) -> str:
        """The path of a result scored from (or read back for) a file; ValueError for an in-memory image."""
        if self.path is None:
            raise ValueError("this result has no path (an in-memory image was scored)")
        return self.path

    def scores(self) -> dict[str, float | None]:
        """{axis: score} for every axis."""
        return {axis: getattr(self, axis) for axis in AXES}

    def as_dict(self) -> dict[str, Any]:
        """The documented record fields, in order."""
        return {name: getattr(self, name) for name in FIELDS}


def error_result(path: str | None, reason: str, width: int | None = None, height: int | None = None) -> ScoreResult:
    """A record for an image that has no scores, with a one-line reason."""
    return ScoreResult(path, None, None, None, width, height, reason)


def scored_result(path: str | None, scores: dict[str, float], width: int, height: int) -> ScoreResult:
    """A record with the scores a backend gave (axes it does not rate stay None)."""
    axes: dict[str, Any] = {axis: scores.get(axis) for axis in AXES}
    return ScoreResult(path=path, width=width, height=height, **axes)


def rounded(result: ScoreResult) -> dict[str, Any]:
    """The record as written to every output format: documented fields, scores rounded."""
    row = result.as_dict()
    for axis in AXES:
        if row[axis] is not None:
            row[axis] = round(row[axis], DECIMALS)
    return row
