"""Text result writers (table, JSON, JSONL, CSV), streamed record by record, and stdout text.

Open them through :func:`perceptlite.records.files.write`. Every format carries the record fields of
:mod:`perceptlite.records`; scores are rounded to 2 decimals. ``--json`` writes one JSON array incrementally, so even a
partial file of an interrupted run shows what was done (the ``-o`` file is only put in place when
the run finishes).
"""

from __future__ import annotations

import contextlib
import csv
import io
import sys
from collections.abc import Iterator
from typing import IO

from . import AXES, FIELDS, SIZE_FIELDS, ScoreResult
from . import rounded as record
from .names import display_name, escape_unsafe, json_text


class Writer:
    """Base class: `write` one result at a time, `close` once at the end."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def write(self, result: ScoreResult) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stream.flush()


class TableWriter(Writer):
    """Readable columns; the path comes last so long names do not break the alignment."""

    def __init__(self, stream: IO[str]):
        super().__init__(stream)
        self.stream.write(" ".join(f"{name:>6}" for name in (*AXES, *SIZE_FIELDS)) + "  path\n")

    def write(self, result: ScoreResult) -> None:
        row = record(result)
        path = display_name(row["path"] or "")  # control characters and undecodable bytes are escaped
        sizes = " ".join(f"{_cell(row[name]):>6}" for name in SIZE_FIELDS)
        if result.error:
            scores = " ".join(f"{'-':>6}" for _ in AXES)
            self.stream.write(f"{scores} {sizes}  {path}  [error: {escape_unsafe(result.error)}]\n")
        else:
            scores = " ".join(f"{row[axis]:6.2f}" if row[axis] is not None else f"{'-':>6}" for axis in AXES)
            self.stream.write(f"{scores} {sizes}  {path}\n")
        if self.stream.isatty():  # show rows as they come when a person is watching
            self.stream.flush()


class JsonWriter(Writer):
    """One JSON array of records, written incrementally."""

    def __init__(self, stream: IO[str]):
        super().__init__(stream)
        self.count = 0
        self.stream.write("[")

    def write(self, result: ScoreResult) -> None:
        self.stream.write(",\n  " if self.count else "\n  ")
        self.stream.write(json_text(record(result)))
        self.count += 1

    def close(self) -> None:
        self.stream.write("\n]\n" if self.count else "]\n")
        super().close()


class JsonlWriter(Writer):
    """One JSON object per line."""

    def write(self, result: ScoreResult) -> None:
        self.stream.write(json_text(record(result)) + "\n")


class CsvWriter(Writer):
    """A header row with the record fields, then one row per image; empty cells for null."""

    def __init__(self, stream: IO[str]):
        super().__init__(stream)
        self.csv = csv.writer(stream, lineterminator="\n")
        # The csv module quotes a field with "\n" but not one with a lone "\r" when the line ends in
        # "\n"; rows with a carriage return anywhere are written with every field quoted.
        self.quoted_csv = csv.writer(stream, lineterminator="\n", quoting=csv.QUOTE_ALL)
        self.csv.writerow(FIELDS)

    def write(self, result: ScoreResult) -> None:
        row = record(result)
        cells = ["" if row[f] is None else row[f] for f in FIELDS]
        has_return = any(isinstance(cell, str) and "\r" in cell for cell in cells)
        (self.quoted_csv if has_return else self.csv).writerow(cells)


# Text format name -> writer class. New formats register here (and in records.files.FORMATS).
WRITERS: dict[str, type[Writer]] = {
    "table": TableWriter,
    "json": JsonWriter,
    "jsonl": JsonlWriter,
    "csv": CsvWriter,
}


def _cell(value) -> str:
    return "-" if value is None else str(value)


@contextlib.contextmanager
def stdout_text() -> Iterator[IO[str]]:
    """sys.stdout as UTF-8 text that survives any file name (undecodable bytes pass through)."""
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:  # e.g. replaced by a StringIO-like object
        yield sys.stdout
        return
    sys.stdout.flush()
    stream = io.TextIOWrapper(buffer, encoding="utf-8", errors="surrogateescape", newline="", line_buffering=False, write_through=False)
    try:
        yield stream
    finally:
        stream.flush()
        stream.detach()
