"""Parquet score files (``--parquet FILE``, ``-o FILE.parquet``), written and read with pyarrow
(``pip install "perceptlite[parquet]"``); open them through :mod:`perceptlite.records.files`.

Columns: the score record fields (:data:`perceptlite.records.FIELDS`) plus ``model`` and
``model_hash``, so a dataset table says which model produced it, and ``path_bytes``: null for
every name that is valid UTF-8, else the name's exact bytes (``path`` then shows each undecodable
byte as U+FFFD; see perceptlite/records/names.py). The file is written under a
temporary name and renamed when complete (perceptlite/records/publish.py): an interrupted run never
leaves a half-written file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import PerceptliteError, one_line
from . import AXES, FIELDS, SIZE_FIELDS, ScoreResult, rounded
from .names import from_bytes, readable_text, utf8_or_none
from .publish import discard, publish, temporary_beside

INSTALL_HINT = 'pip install "perceptlite[parquet]"'
MODEL_COLUMNS = ("model", "model_hash")
ROWS_PER_GROUP = 8192


def require_pyarrow():
    """Import pyarrow and pyarrow.parquet, or raise a one-line error with the install command."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise PerceptliteError(f"Parquet files need pyarrow, which is not installed: {INSTALL_HINT}") from None
    return pyarrow


def schema():
    """The Arrow schema of a perceptlite Parquet score file."""
    pa = require_pyarrow()
    types = {"path": pa.string(), "error": pa.string(), **dict.fromkeys(AXES, pa.float64()), **dict.fromkeys(SIZE_FIELDS, pa.int32())}
    columns = [(name, types[name]) for name in FIELDS] + [(name, pa.string()) for name in MODEL_COLUMNS]
    return pa.schema([*columns, ("path_bytes", pa.binary())])


class ParquetScoreWriter:
    """Streams score records into a Parquet file, one row group per ``ROWS_PER_GROUP`` records."""

    def __init__(self, path: str | os.PathLike, model: str | None = None, model_hash: str | None = None):
        self.pa = require_pyarrow()
        import pyarrow.parquet as pq

        self.path = os.fspath(path)
        self.model = model
        self.model_hash = model_hash
        self.schema = schema().with_metadata({"perceptlite.model": model or "", "perceptlite.model_hash": model_hash or ""})
        self._tmp = ""
        try:
            self._tmp = temporary_beside(self.path)
            self._writer = pq.ParquetWriter(self._tmp, self.schema)
        except OSError as exc:
            if self._tmp:
                discard(self._tmp)
            raise PerceptliteError(f"{self.path}: cannot write the Parquet file ({exc.strerror or one_line(exc)})") from None
        self._rows: list[dict[str, Any]] = []
        self.count = 0

    def write(self, record: Any) -> None:
        """Add one score record (a ScoreResult or a mapping with the record fields)."""
        row = record_dict(record)
        row["path"], row["path_bytes"] = parquet_path(row.get("path"))
        row.setdefault("model", self.model)
        row.setdefault("model_hash", self.model_hash)
        self._rows.append(row)
        if len(self._rows) >= ROWS_PER_GROUP:
            self._flush()

    def close(self) -> None:
        """Finish the file and move it into place; on failure drop it (PerceptliteError, one line)."""
        try:
            self._flush()
            self._writer.close()
            publish(self._tmp, self.path)
        except PerceptliteError:
            self.abort()
            raise
        except OSError as exc:
            self.abort()
            raise PerceptliteError(f"{self.path}: cannot write the Parquet file ({exc.strerror or one_line(exc)})") from None

    def abort(self) -> None:
        """Drop the unfinished file."""
        try:
            self._writer.close()
        except OSError:
            pass  # e.g. the disk is full: the file is dropped anyway
        finally:
            discard(self._tmp)

    def __enter__(self) -> ParquetScoreWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _flush(self) -> None:
        if not self._rows:
            return
        columns = {name: [row.get(name) for row in self._rows] for name in self.schema.names}
        try:
            self._writer.write_table(self.pa.table(columns, schema=self.schema))
        except OSError as exc:
            raise PerceptliteError(f"{self.path}: cannot write the Parquet file ({exc.strerror or one_line(exc)})") from None
        self.count += len(self._rows)
        self._rows = []


def parquet_path(path: str | None) -> tuple[str | None, bytes | None]:
    """The `path` and `path_bytes` cells of a name (see the module docstring)."""
    raw = utf8_or_none(path) if path is not None else None
    return (readable_text(path), raw) if path is not None and raw is not None else (path, None)


def read_parquet(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a Parquet score file into record dicts (the record fields plus model and model_hash if present)."""
    require_pyarrow()
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(os.fspath(path))
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise PerceptliteError(f"{path}: not a readable Parquet file ({one_line(exc)})") from None
    if "path" not in table.column_names:
        raise PerceptliteError(f"{path}: Parquet file has no 'path' column (not a perceptlite score file)")
    rows = table.to_pylist()
    for row in rows:
        raw = row.pop("path_bytes", None)
        if raw is not None:
            row["path"] = from_bytes(raw)
    return rows


def record_dict(record: ScoreResult | Mapping[str, Any]) -> dict[str, Any]:
    """A ScoreResult (scores rounded as in CSV and JSON) or a mapping with the record fields, as a plain dict."""
    if isinstance(record, Mapping):
        return dict(record)
    return rounded(record)


def arrow_table(results: Iterable[ScoreResult], model: str | None, model_hash: str | None):
    """Score results (unrounded) as a pyarrow Table with the Parquet score columns (Ray Data's batches)."""
    pa = require_pyarrow()
    rows = []
    for result in results:
        row = result.as_dict()
        row["path"], row["path_bytes"] = parquet_path(row["path"])
        rows.append({**row, "model": model, "model_hash": model_hash})
    arrow_schema = schema()
    return pa.table({name: [row.get(name) for row in rows] for name in arrow_schema.names}, schema=arrow_schema)
