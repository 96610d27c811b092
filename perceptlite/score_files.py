"""Read the score files that ``perceptlite score`` writes (JSONL, JSON, CSV, Parquet) back into results.

``filter``, ``merge`` and ``report`` take scores from these files instead of scoring again. The
format follows the file name's extension; any problem is a one-line error naming the file and line.
"""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Any, Iterator, Mapping

from .errors import PerceptliteError
from .pipeline import ScoreResult

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


class ScoreFileError(PerceptliteError):
    """A score file that cannot be read; the message is one line naming the file."""


def score_format(path: str | os.PathLike) -> str:
    """The format of a score file from its extension: jsonl, json, csv or parquet."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in FORMATS:
        raise ScoreFileError(f"{path}: unknown score file type {suffix or '(none)'!r}; use .jsonl, .json, .csv or .parquet")
    return FORMATS[suffix]


def read_scores(path: str | os.PathLike) -> list[ScoreResult]:
    """Every record of a score file, in file order."""
    kind = score_format(path)
    if not os.path.isfile(path):
        raise ScoreFileError(f"{path}: no such score file")
    try:
        if kind == "parquet":
            from .parquet import read_parquet

            rows = read_parquet(path)
            return [to_result(row, path, index + 1) for index, row in enumerate(rows)]
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
            if kind == "jsonl":
                return list(_read_jsonl(handle, path))
            if kind == "json":
                return _read_json(handle, path)
            return list(_read_csv(handle, path))
    except OSError as exc:
        raise ScoreFileError(f"{path}: cannot read ({exc.strerror or exc})") from None


def to_result(row: Mapping[str, Any], path: str | os.PathLike, where: int) -> ScoreResult:
    """Check one record's fields and convert them; `where` is the line or row number for errors."""
    if not isinstance(row, Mapping) or not isinstance(row.get("path"), str) or not row["path"]:
        raise ScoreFileError(f"{path}: record {where} has no 'path' (not a perceptlite score file?)")
    try:
        return ScoreResult(
            path=row["path"],
            iaa=_optional(row.get("iaa"), _finite),
            iqa=_optional(row.get("iqa"), _finite),
            ista=_optional(row.get("ista"), _finite),
            width=_optional(row.get("width"), lambda v: int(float(v))),
            height=_optional(row.get("height"), lambda v: int(float(v))),
            error=row.get("error") or None,
        )
    except (TypeError, ValueError) as exc:
        raise ScoreFileError(f"{path}: record {where} has a bad value ({exc})") from None


def _optional(value: Any, convert):
    if value is None or value == "":
        return None
    return convert(value)


def _finite(value: Any) -> float | None:
    """A score; NaN and Infinity (written by other tools) count as missing."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a score")
    number = float(value)
    return number if math.isfinite(number) else None


def _read_jsonl(handle, path) -> Iterator[ScoreResult]:
    for number, line in enumerate(handle, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ScoreFileError(f"{path}: line {number} is not JSON ({exc.msg}); is the file complete?") from None
        yield to_result(row, path, number)


def _read_json(handle, path) -> list[ScoreResult]:
    try:
        rows = json.load(handle)
    except json.JSONDecodeError as exc:
        raise ScoreFileError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); is the file complete?") from None
    if isinstance(rows, Mapping):
        rows = [rows]
    if not isinstance(rows, list):
        raise ScoreFileError(f"{path}: expected a JSON array of score records")
    return [to_result(row, path, index + 1) for index, row in enumerate(rows)]


def _read_csv(handle, path) -> Iterator[ScoreResult]:
    reader = csv.DictReader(handle)
    if not reader.fieldnames or "path" not in reader.fieldnames:
        raise ScoreFileError(f"{path}: CSV has no 'path' column (not a perceptlite score file)")
    for row in reader:
        yield to_result(row, path, reader.line_num)
