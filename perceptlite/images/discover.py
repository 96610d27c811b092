"""Find the image files to score, streaming, in a deterministic order.

Folders are walked depth-first with ``os.scandir``; each folder's entries are sorted by name, so
only one folder's image names are held at a time (never the whole tree). Symbolic links are
followed, each real folder is visited once (which also breaks symlink loops), and a link whose
target is missing is still yielded so that its record says why it could not be scored.
"""

from __future__ import annotations

import os
import stat
import zlib
from collections.abc import Callable, Iterable, Iterator

from .decode import IMAGE_EXTENSIONS


def parse_shard(text: str) -> tuple[int, int]:
    """Parse "I/N" (0 <= I < N) into (I, N); ValueError with a one-line message otherwise."""
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text!r}: need N >= 1 and 0 <= I < N")
    return index, count


def in_shard(relative_path: str, shard: tuple[int, int] | None) -> bool:
    """Stable shard assignment: a file's shard depends only on its path below the given root."""
    if shard is None or shard[1] == 1:
        return True
    key = relative_path.replace(os.sep, "/").encode("utf-8", "surrogateescape")
    return zlib.crc32(key) % shard[1] == shard[0]


def iter_image_files(
    paths: Iterable[str | os.PathLike],
    *,
    recursive: bool = True,
    hidden: bool = False,
    shard: tuple[int, int] | None = None,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    on_error: Callable[[str, str], None] | None = None,
) -> Iterator[str]:
    """Yield image file paths under `paths` (files given directly are always yielded)."""
    suffixes = tuple(ext.lower() for ext in extensions)
    visited: set[tuple[int, int]] = set()
    report = on_error or (lambda path, reason: None)
    for root in paths:
        root = os.fspath(root)
        if os.path.isdir(root):
            for path in _walk(root, recursive, hidden, suffixes, visited, report):
                if in_shard(os.path.relpath(path, root), shard):
                    yield path
        elif in_shard(os.path.basename(root), shard):
            yield root


def _walk(folder, recursive, hidden, suffixes, visited, report) -> Iterator[str]:
    try:
        info = os.stat(folder)
    except OSError as exc:
        report(folder, _reason(exc))
        return
    identity = (info.st_dev, info.st_ino)
    if identity in visited:  # a symlink loop, or a folder reached twice through links
        return
    visited.add(identity)
    try:
        entries = _list(folder, recursive, hidden, suffixes)
    except OSError as exc:
        report(folder, _reason(exc))
        return
    for name, is_dir in entries:
        path = os.path.join(folder, name)
        if is_dir:
            yield from _walk(path, recursive, hidden, suffixes, visited, report)
        else:
            yield path


def _list(folder, recursive, hidden, suffixes) -> list[tuple[str, bool]]:
    """(name, is_folder) for the image files and subfolders of one folder, sorted by name."""
    entries = []
    with os.scandir(folder) as scan:
        for entry in scan:
            if not hidden and _is_hidden(entry):
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:  # e.g. a self-referencing link: treat it as a file, decode reports it
                is_dir = False
            if is_dir:
                if recursive:
                    entries.append((entry.name, True))
            elif entry.name.lower().endswith(suffixes):
                entries.append((entry.name, False))
    entries.sort()
    return entries


def _is_hidden(entry: os.DirEntry) -> bool:
    if entry.name.startswith("."):
        return True
    attributes = getattr(stat, "FILE_ATTRIBUTE_HIDDEN", 0)
    if attributes and os.name == "nt":
        try:
            return bool(getattr(entry.stat(follow_symlinks=False), "st_file_attributes", 0) & attributes)
        except OSError:
            return False
    return False


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
