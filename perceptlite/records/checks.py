"""The one check of a score record read back from disk: score files (JSON, JSONL, CSV, Parquet)
and cache rows go through :func:`checked_result`, so nothing read back reaches a command with a
type or a value a fresh score could not have.

A fresh score is a finite number in 0-100 (or missing), a size is a whole number of pixels in
1..2**31-1 (what Parquet's int32 column holds), an error is text. Values written as NaN or
Infinity by other tools count as missing scores; a number that overflows to infinity (1e400) or
lies outside 0-100 is refused with :class:`RecordError`, whose message says which field and why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from . import AXES, SIZE_FIELDS, ScoreResult

MAX_SIDE = 2**31 - 1
SCORE_RANGE = (0.0, 100.0)
# How other tools write a missing (non-finite) score in text; any other text must be a finite number.
NON_FINITE_WORDS = frozenset({"nan", "-nan", "+nan", "inf", "-inf", "+inf", "infinity", "-infinity", "+infinity"})


class RecordError(ValueError):
    """A field of a record read back that a fresh score could not have; the message names it."""


def checked_result(row: Mapping[str, Any], *, missing_non_finite: bool = True) -> ScoreResult:
    """`row` (the record fields) as a ScoreResult, every field checked; RecordError if one is wrong.

    `missing_non_finite`: NaN and Infinity scores count as missing (score files written by other
    tools); False refuses them too (the cache, which perceptlite alone writes)."""
    if not isinstance(row, Mapping):
        raise RecordError(f"is a {type(row).__name__}, not a record")
    path = row.get("path")
    if not isinstance(path, str) or not path:
        raise RecordError("has no 'path'")
    scores: dict[str, Any] = {axis: checked_score(row.get(axis), axis, missing_non_finite) for axis in AXES}
    sizes: dict[str, Any] = {name: checked_side(row.get(name), name) for name in SIZE_FIELDS}
    return ScoreResult(path=path, **scores, **sizes, error=checked_error(row.get("error")))


def checked_score(value: Any, name: str, missing_non_finite: bool = True) -> float | None:
    """A score in 0-100, None when missing; RecordError for anything else."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().lower() in NON_FINITE_WORDS:
        if missing_non_finite:
            return None
        raise RecordError(f"{name} is {value!r}, not a finite score")
    number = _number(value, name)
    if math.isnan(number) or (math.isinf(number) and not isinstance(value, str)):
        if missing_non_finite:
            return None
        raise RecordError(f"{name} is {number}, not a finite score")
    if math.isinf(number):
        raise RecordError(f"{name} {value!r} overflows")
    low, high = SCORE_RANGE
    if not low <= number <= high:
        raise RecordError(f"{name} {number:g} is outside {low:g}-{high:g}")
    return number


def checked_side(value: Any, name: str) -> int | None:
    """A width or height in whole pixels, None when missing; RecordError for anything else."""
    if value is None or value == "":
        return None
    number = _number(value, name)
    if not math.isfinite(number) or number != int(number) or not 1 <= number <= MAX_SIDE:
        raise RecordError(f"{name} {value!r} is not a size in pixels (a whole number 1-{MAX_SIDE})")
    return int(number)


def checked_error(value: Any) -> str | None:
    """The error text, None for none; RecordError for a number, list or other non-text."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RecordError(f"error is {type(value).__name__} {value!r}, not text")
    return value


def json_float(text: str) -> float:
    """``json.loads(parse_float=...)``: a JSON number that overflows (1e400) is refused, not read as infinity."""
    number = float(text)
    if math.isinf(number):
        raise RecordError(f"number {text} overflows")
    return number


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RecordError(f"{name} is {type(value).__name__} {value!r}, not a number")
    try:
        return float(value)
    except OverflowError:  # an integer too large for a float
        raise RecordError(f"{name} {value!r} overflows") from None
    except ValueError:
        raise RecordError(f"{name} {value!r} is not a number") from None
