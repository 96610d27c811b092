"""A persistent score cache (``--cache FILE``): one SQLite file in WAL mode.

A cached score is keyed by the model (see :func:`model_key`: the weight variant, every weight
file's hash and every manifest field that changes the numbers) and the file's identity: its absolute path,
size and modification time in nanoseconds, or, with ``content_hash=True``, a hash of its bytes (so
a renamed, copied or touched file is still a hit). Re-running on a grown folder scores only new
or changed files. Scores are committed in small batches, so a run that is killed loses at most
the batch in flight; several processes may share one cache (SQLite locking, with a busy timeout).
Failed files are not cached: they are tried again on the next run. A cached row is checked like
a fresh score before it is used; one that a fresh score could not have is scored again and replaced.

A file that is not a readable perceptlite cache raises :class:`CacheError`; it is never
silently replaced or emptied.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import threading
import time
from dataclasses import dataclass

from ..errors import PerceptliteError
from ..errors import one_line as _one_line
from ..package.manifest import ModelPackage
from ..records import AXES, NUMERIC_FIELDS, ScoreResult
from ..records.checks import RecordError, checked_result

# "PLSC" (perceptlite score cache) in SQLite's header, so a foreign database is recognised.
APPLICATION_ID = 0x504C5343
SCHEMA_VERSION = 2  # 2: keyed on model_key (variant + manifest); 1 was keyed on the weight hashes only
# Manifest fields that only describe a package; every other field (present or future) is in the key.
DESCRIPTIVE_FIELDS = frozenset({"description", "provenance", "fidelity", "license", "model_card", "citation", "notes"})
# Bumped when the runtime's decoding or preprocessing changes the numbers of the same package.
RUNTIME_REVISION = 1
COMMIT_EVERY = 64  # results per transaction
COMMIT_SECONDS = 1.0  # ...or at most this long between commits while results arrive
BUSY_TIMEOUT_S = 60.0
MAX_COPIES = 16  # rows tried for one content hash (copies of a file) before scoring it again

_RESULT_COLUMNS = ", ".join(NUMERIC_FIELDS)  # iaa, iqa, ista, width, height
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS scores (
    model_key TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    content_hash TEXT,
    {", ".join(f"{axis} REAL" for axis in AXES)},
    width INTEGER, height INTEGER,
    scored_at REAL NOT NULL,
    PRIMARY KEY (model_key, path)
);
CREATE INDEX IF NOT EXISTS scores_by_content ON scores (model_key, content_hash);
"""


def model_key(package: ModelPackage, variant: str | None = None) -> str:
    """Who computes a score: the chosen weight variant and every manifest field that is not only
    descriptive (files and their sha256, input spec, outputs and calibration, version, backend...),
    plus the runtime's preprocessing revision. Two runs share cached scores only when this is equal."""
    variants = package.variants
    chosen = variant or package.default_variant or next(iter(variants), "")
    relevant = {key: value for key, value in package.raw.items() if key not in DESCRIPTIVE_FIELDS}
    identity = {"manifest": relevant, "variant": chosen, "runtime": RUNTIME_REVISION}
    text = json.dumps(identity, sort_keys=True, ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:32]


def _checked_row(path: str, row: tuple) -> ScoreResult | None:
    """A cached row checked like a fresh score (records/checks.py); None for a row that a fresh score
    could not have (edited or damaged: 'abc', 1e999, 150), so the file is scored again and the row replaced."""
    try:
        return checked_result({"path": path, **dict(zip(NUMERIC_FIELDS, row))}, missing_non_finite=False)
    except RecordError:
        return None


class CacheError(PerceptliteError):
    """The cache file cannot be used; the message is one line naming the file."""


@dataclass(frozen=True)
class FileIdentity:
    path: str  # absolute
    size: int
    mtime_ns: int
    content_hash: str | None


def file_identity(path: str | os.PathLike, content_hash: bool = False) -> FileIdentity | None:
    """Who a file is for the cache; None when it cannot be read (the scorer will report why)."""
    absolute = os.path.abspath(os.fspath(path))
    try:
        info = os.stat(absolute)
        if not stat.S_ISREG(info.st_mode):  # a FIFO or device is never opened (it could block)
            return None
        digest = _hash_file(absolute) if content_hash else None
    except OSError:
        return None
    return FileIdentity(absolute, info.st_size, info.st_mtime_ns, digest)


def _hash_file(path: str) -> str:
    digest = hashlib.blake2b()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):  # (hashlib.file_digest is Python 3.11+)
            digest.update(block)
    return digest.hexdigest()[:32]


class ScoreCache:
    """SQLite score cache for one model package; implements the pipeline's ResultCache protocol.

    ``lookup`` may run in many threads at once (one read connection per thread); ``store``
    buffers results and commits every ``COMMIT_EVERY`` results or ``COMMIT_SECONDS``.
    """

    def __init__(self, path: str | os.PathLike, model_key: str, *, content_hash: bool = False, timeout: float = BUSY_TIMEOUT_S):
        self.path = os.fspath(path)
        self.model_key = model_key
        self.content_hash = content_hash
        self.timeout = timeout
        self.hits = 0
        self.stored = 0
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._identities: dict[str, FileIdentity] = {}
        self._pending: list[tuple] = []
        self._first_pending_at = 0.0
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise CacheError(f"{self.path}: folder {folder} does not exist; create it or pass another --cache file")
        if os.path.exists(self.path) and not os.path.isfile(self.path):  # a FIFO or device would block SQLite
            raise CacheError(f"{self.path}: not a regular file; pass a --cache file")
        self._writer = self._connect()
        self._guard(self._initialise)

    # -- the ResultCache protocol -------------------------------------------------------------

    def lookup(self, path: str) -> ScoreResult | None:
        """The cached result for `path` if its identity and the package match, else None."""
        identity = file_identity(path, self.content_hash)
        if identity is None:
            return None
        rows = self._guard(self._find, self._reader(), identity)
        result = next(filter(None, (_checked_row(os.fspath(path), row) for row in rows)), None)
        with self._lock:
            if result is None:
                self._identities[os.fspath(path)] = identity
            else:
                self.hits += 1
        return result

    def store(self, result: ScoreResult) -> None:
        """Remember a fresh successful result (errors are not cached)."""
        if result.error is not None or result.path is None:
            return
        with self._lock:
            identity = self._identities.pop(result.path, None)
        identity = identity or file_identity(result.path, self.content_hash)
        if identity is None:
            return
        if not self._pending:
            self._first_pending_at = time.monotonic()
        self._pending.append(
            (
                self.model_key,
                identity.path,
                identity.size,
                identity.mtime_ns,
                identity.content_hash,
                *(getattr(result, name) for name in NUMERIC_FIELDS),
                time.time(),
            )
        )
        if len(self._pending) >= COMMIT_EVERY or time.monotonic() - self._first_pending_at >= COMMIT_SECONDS:
            self.commit()

    # -- the rest -----------------------------------------------------------------------------

    def commit(self) -> None:
        """Write the buffered results in one transaction."""
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        self._guard(self._insert, rows)
        self.stored += len(rows)

    def close(self) -> None:
        """Commit what is buffered and close every connection."""
        try:
            self.commit()
        finally:
            with self._lock:
                connections, self._connections = self._connections, []
            for connection in connections:
                connection.close()

    def __enter__(self) -> ScoreCache:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __len__(self) -> int:
        """Cached results for this package."""
        row = self._guard(lambda: self._writer.execute("SELECT COUNT(*) FROM scores WHERE model_key = ?", (self.model_key,)).fetchone())
        return int(row[0])

    def _connect(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise CacheError(f"{self.path}: cannot open the score cache ({_one_line(exc)})") from None
        with self._lock:
            self._connections.append(connection)
        return connection

    def _reader(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self._connect()
        return connection

    def _initialise(self) -> None:
        # Check and create inside one write transaction, so that runs starting together on a new
        # file queue on SQLite's lock instead of racing each other through the checks.
        db = self._writer
        self._until_unlocked(lambda: db.execute("BEGIN IMMEDIATE"))
        try:
            self._check_or_create(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        # Changing the journal mode needs the file to itself; another run may be reading it.
        self._until_unlocked(lambda: db.execute("PRAGMA journal_mode = WAL").fetchone())
        db.execute("PRAGMA synchronous = NORMAL")  # with WAL: a killed process loses nothing committed

    def _check_or_create(self, db: sqlite3.Connection) -> None:
        application_id = db.execute("PRAGMA application_id").fetchone()[0]
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        if application_id != APPLICATION_ID and tables:
            raise CacheError(f"{self.path}: an SQLite database but not a perceptlite score cache; pass another --cache file")
        if application_id == APPLICATION_ID:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 1:
                raise CacheError(
                    f"{self.path}: score cache from an older perceptlite, keyed without the weight variant and manifest, "
                    "so its scores cannot be trusted; delete it or pass another --cache file"
                )
            if version != SCHEMA_VERSION:
                raise CacheError(
                    f"{self.path}: score cache format {version}, this perceptlite reads {SCHEMA_VERSION}; pass another --cache file"
                )
            problems = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
            if problems != ["ok"]:
                raise CacheError(
                    f"{self.path}: corrupt score cache ({_one_line('; '.join(problems))}); move it aside or delete it to start a new one"
                )
            return
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _until_unlocked(self, step):
        """Run `step`, retrying while SQLite reports the file busy (it skips its busy handler on some locks)."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return step()
            except sqlite3.OperationalError as exc:
                if not ("locked" in str(exc) or "busy" in str(exc)) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _find(self, db: sqlite3.Connection, identity: FileIdentity) -> list[tuple]:
        """The rows that may hold this file's scores (with content hashes, every copy's)."""
        columns = _RESULT_COLUMNS
        if identity.content_hash is not None:
            return db.execute(
                f"SELECT {columns} FROM scores WHERE model_key = ? AND content_hash = ? AND size = ? LIMIT {MAX_COPIES}",
                (self.model_key, identity.content_hash, identity.size),
            ).fetchall()
        return db.execute(
            f"SELECT {columns} FROM scores WHERE model_key = ? AND path = ? AND size = ? AND mtime_ns = ?",
            (self.model_key, identity.path, identity.size, identity.mtime_ns),
        ).fetchall()

    def _insert(self, rows: list[tuple]) -> None:
        db = self._writer
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                f"INSERT OR REPLACE INTO scores (model_key, path, size, mtime_ns, content_hash, {_RESULT_COLUMNS}, scored_at) "
                f"VALUES ({', '.join('?' * (6 + len(NUMERIC_FIELDS)))})",
                rows,
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _guard(self, function, *args):
        """Run a database step; SQLite errors become one-line CacheErrors naming the file."""
        try:
            return function(*args)
        except CacheError:
            raise
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise CacheError(f"{self.path}: score cache stayed locked by another run for {self.timeout:.0f} s; try again") from None
            raise CacheError(f"{self.path}: cannot use the score cache ({_one_line(exc)})") from None
        except sqlite3.DatabaseError as exc:
            raise CacheError(
                f"{self.path}: corrupt or not a perceptlite score cache ({_one_line(exc)}); move it aside or delete it to start a new one"
            ) from None
