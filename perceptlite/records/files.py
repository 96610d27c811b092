"""Score files, read and written in one place: :func:`read` and :func:`write`.

``score`` writes them (``-o FILE``, ``--parquet FILE``), ``merge`` joins them, ``filter`` and
``report`` take scores from them instead of scoring again. The format follows the file name's
extension (.json, .jsonl, .csv, .parquet) unless one is given; stdout gets a table by default. Any
problem reading is a one-line error naming the file and line.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from collections.abc import Iterator, Mapping
from typing import IO, Any, Protocol

from ..errors import PerceptliteError, one_line
from . import ScoreResult  # the data model (records/__init__.py)
from .checks import RecordError, checked_result, json_float

# File name extension -> format; `write` also knows "table" (the readable default for stdout).
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
FORMATS = ("table", "json", "jsonl", "csv", "parquet")


class ScoreFileError(PerceptliteError):
    """A score file that cannot be read or written; the message is one line naming the file."""


class ResultWriter(Protocol):
    """What :func:`write` yields: `write` one result at a time (the file is finished when the block ends)."""

    def write(self, result: ScoreResult) -> None: ...


def format_of(path: str | os.PathLike[str], default: str | None = None) -> str:
    """The format of a score file from its extension: jsonl, json, csv or parquet (or `default`)."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    if default is not None:
        return default
    raise ScoreFileError(f"{path}: unknown score file type {suffix or '(none)'!r}; use .jsonl, .json, .csv or .parquet")


@contextlib.contextmanager
def write(
    path: str | os.PathLike[str] | None, format: str | None = None, *, model: str | None = None, model_hash: str | None = None
) -> Iterator[ResultWriter]:
    """Write score records to `path` (None: stdout) in `format` (None: from the extension; a table
    for stdout or an unknown extension). A file is replaced atomically when the block finishes, and
    left unchanged when it fails; FIFOs and devices are written through. `model` and `model_hash`
    go into Parquet files."""
    kind = format or (format_of(path, default="table") if path is not None else "table")
    if kind == "parquet":
        if path is None:
            raise ScoreFileError("Parquet needs a file: pass -o FILE.parquet")
        from .parquet import ParquetScoreWriter

        with ParquetScoreWriter(path, model, model_hash) as parquet:
            yield parquet
        return
    from .publish import atomic_output
    from .text import WRITERS, stdout_text

    opener: contextlib.AbstractContextManager[IO[str]] = atomic_output(path) if path is not None else stdout_text()
    with opener as stream:
        writer = WRITERS[kind](stream)
        yield writer
        writer.close()


def read(path: str | os.PathLike[str]) -> list[ScoreResult]:
    """Every record of a score file, in file order."""
    kind = format_of(path)
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
    """Check one record's fields as a fresh score's (records/checks.py); `where` is the line or row number for errors."""
    if not isinstance(row, Mapping) or not isinstance(row.get("path"), str) or not row["path"]:
        raise ScoreFileError(f"{path}: record {where} has no 'path' (not a perceptlite score file?)")
    try:
        return checked_result(row)
    except RecordError as exc:
        raise ScoreFileError(f"{path}: record {where} has a bad value ({exc})") from None


def _json(text: str, path, where: str):
    """Parse JSON (JSONDecodeError for bad syntax); a number that overflows (1e400) or has
    thousands of digits, or nesting too deep to parse, is a one-line error like any bad value."""
    try:
        return json.loads(text, parse_float=json_float)
    except json.JSONDecodeError:
        raise
    except (ValueError, RecursionError) as exc:  # RecordError is a ValueError
        raise ScoreFileError(f"{path}: {where} has a bad value ({one_line(exc, 120)})") from None


def _read_jsonl(handle, path) -> Iterator[ScoreResult]:
    for number, line in enumerate(handle, 1):
        if not line.strip():
            continue
        try:
            row = _json(line, path, f"line {number}")
        except json.JSONDecodeError as exc:
            raise ScoreFileError(f"{path}: line {number} is not JSON ({exc.msg}); is the file complete?") from None
        yield to_result(row, path, number)


def _read_json(handle, path) -> list[ScoreResult]:
    try:
        rows = _json(handle.read(), path, "the file")
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
