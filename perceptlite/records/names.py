"""File names are data: how a path with any bytes in it is written, shown and read back.

On POSIX a name is bytes. Python decodes it as UTF-8 with ``surrogateescape``: a byte that is not
valid UTF-8 (0x80-0xFF) becomes the lone code point U+DC80-U+DCFF, and ``os.fsencode`` gives the
original bytes back. That is the one rule for names that are not valid UTF-8; each format writes
those code points in the way it can carry them:

- JSON / JSONL: the escape ``\\udcXX`` (the file stays valid UTF-8; ``json.loads`` gives the code
  point back);
- CSV: the original byte, unchanged (the file holds the name's bytes, as ``ls > file`` would);
- Parquet: ``path`` holds the name with U+FFFD for each such byte, and ``path_bytes`` the exact
  bytes (null for every valid UTF-8 name);
- the table, the HTML report and messages on a terminal: see :func:`display_name`.
"""

from __future__ import annotations

import json
import os
import re

# Lone surrogates (undecodable bytes), C0/C1 controls and DEL, line/paragraph separators, and the
# bidirectional overrides and isolates that can reorder what a terminal shows.
_UNSAFE = re.compile("[\ud800-\udfff\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def is_plain(name: str) -> bool:
    """True when `name` can be shown as it is: no control characters, no undecodable bytes."""
    return _UNSAFE.search(name) is None


def display_name(name: str) -> str:
    """The name as it is when plain (and not starting with a double quote), else a JSON string.

    The JSON string escapes every control character, undecodable byte (``\\udcXX``) and
    bidirectional override, so a terminal never receives them, and ``json.loads`` of a quoted
    form gives the exact name back.
    """
    if is_plain(name) and not name.startswith('"'):
        return name
    return '"' + escape_unsafe(json.dumps(name, ensure_ascii=False)[1:-1]) + '"'


def escape_unsafe(text: str) -> str:
    """Replace every unsafe character of already JSON-escaped text by its ``\\uXXXX`` escape."""
    return _UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def json_text(value) -> str:
    """``json.dumps`` that keeps non-ASCII readable but escapes every unsafe character.

    Lone surrogates become ``\\udcXX``, so the result is always valid UTF-8; C1 controls and
    bidirectional overrides are escaped too, so a terminal never receives them. NaN and Infinity
    are refused (ValueError): they are not JSON.
    """
    return escape_unsafe(json.dumps(value, ensure_ascii=False, allow_nan=False))


def utf8_or_none(name: str) -> bytes | None:
    """None for a valid UTF-8 name; otherwise the name's exact bytes (see the module rule)."""
    try:
        name.encode("utf-8")
        return None
    except UnicodeEncodeError:
        return os.fsencode(name) if os.name != "nt" else name.encode("utf-8", "surrogatepass")


def readable_text(name: str) -> str:
    """`name` as valid UTF-8 text, each undecodable byte shown as U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace") if utf8_or_none(name) is not None else name


def from_bytes(raw: bytes) -> str:
    """The name of a file whose path is `raw` (inverse of :func:`utf8_or_none`)."""
    return os.fsdecode(raw) if os.name != "nt" else raw.decode("utf-8", "surrogatepass")
