"""How every command publishes a file: the one atomic-write helper of the runtime, and the checks
that keep an output from destroying an input.

A file is written under a short temporary name in its own folder (``.pl-XXXXXXXX.tmp``, so any valid
output name works, however long) and renamed over the target only when the command has finished
it; on any failure or interruption the temporary file is removed and an existing target is left as
it was. FIFOs and devices (``/dev/stdout``, a named pipe) are written through as streams. Symbolic
links are followed: the file a link points to is replaced, the link stays.

:func:`check_outputs` runs before any work: no output may be a folder, one of the inputs (by
resolved path, and by ``samefile`` for hard links) or another output.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

from ..errors import PerceptliteError
from .names import display_name

TEMP_PREFIX = ".pl-"  # short: the temporary name never outgrows a valid output name
TEMP_SUFFIX = ".tmp"

# Paths whose "files" are the process's own streams or devices: written through, never replaced.
_STREAM_ROOTS = ("/dev/", "/proc/")


class OutputError(PerceptliteError):
    """An output that cannot be used or written; the message is one line naming it."""


def is_stream_target(path: str | os.PathLike) -> bool:
    """True for an existing FIFO, device, socket or /dev, /proc entry (after following links)."""
    text = os.path.abspath(os.fspath(path))
    if text.startswith(_STREAM_ROOTS) or os.path.realpath(text).startswith(_STREAM_ROOTS):
        return True
    try:
        return not stat.S_ISREG(os.stat(text).st_mode) and not stat.S_ISDIR(os.stat(text).st_mode)
    except OSError:  # not there yet (or a dangling link): an ordinary new file
        return False


def temporary_beside(path: str | os.PathLike) -> str:
    """Create an empty temporary file in the folder of `path` (after following links) and return its name."""
    folder = os.path.dirname(os.path.realpath(path))
    fd, name = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX)
    os.close(fd)
    return name


def publish(finished: str, path: str | os.PathLike, mode: int | None = None) -> None:
    """Put the finished temporary file at `path`: rename it over a regular file (following links),
    or copy it into a FIFO or device and drop it. `mode`: the new file's permissions (default: the
    old file's, or what an ordinary new file gets)."""
    try:
        if is_stream_target(path):
            with open(finished, "rb") as source, os.fdopen(_open_stream(path), "wb") as stream:
                shutil.copyfileobj(source, stream, 1 << 20)
            return
        target = os.path.realpath(path)
        os.chmod(finished, mode if mode is not None else _mode_for(target))
        os.replace(finished, target)
    finally:
        discard(finished)


def discard(temporary: str) -> None:
    """Remove a temporary file that will not be published (gone already is fine)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, binary: bool = False, mode: int | None = None) -> Iterator[IO]:
    """Write `path` through a temporary file that replaces it only when the block finishes.

    Text is UTF-8 (undecodable bytes of names pass through). A FIFO or device is written directly,
    as a stream. On failure or interruption nothing is left behind and an existing file is unchanged.
    """
    if is_stream_target(path):
        with _open(_open_stream(path), binary) as stream:
            yield stream
        return
    # The name is chosen before the file exists, so a Ctrl-C at any point after creation finds it to remove.
    temporary = _temporary_name(path)
    try:
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            temporary = ""  # another file's name: never removed
            raise
        with _open(fd, binary) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        publish(temporary, path, mode)
    finally:
        if temporary:
            discard(temporary)


def write_file(path: str | os.PathLike, data: bytes, replace: bool = True) -> bool:
    """Write `data` as the whole of `path` through a temporary file beside it. With `replace` False an
    existing name is never replaced (the file is linked into place, which fails if the name is taken):
    False then, and nothing is written. A new file's mode is what the umask gives any new file."""
    temporary = _temporary_name(path)
    try:
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            temporary = ""  # another file's name: never removed
            raise
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temporary, path)
            return True
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        return True
    finally:
        if temporary:
            discard(temporary)


def _temporary_name(path: str | os.PathLike) -> str:
    folder = os.path.dirname(os.path.realpath(path))
    return os.path.join(folder, f"{TEMP_PREFIX}{secrets.token_hex(4)}{TEMP_SUFFIX}")


def _open_stream(path: str | os.PathLike) -> int:
    """A FIFO or device for writing; never created (a mistyped /dev name is an error, not a new file).
    O_TRUNC as a shell's `>` would: /dev/stdout redirected to a file is rewritten, not overlaid."""
    return os.open(path, os.O_WRONLY | os.O_TRUNC)


def _open(fd: int, binary: bool) -> IO[Any]:
    if binary:
        return os.fdopen(fd, "wb")
    return os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline="")


def _mode_for(target: str) -> int:
    """The old file's permissions, or an ordinary new file's (mkstemp makes 0600)."""
    try:
        return os.stat(target).st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def check_outputs(
    outputs: Mapping[str, str | None], inputs: Mapping[str, Iterable[str] | str | None] = {}, images_option: str = ""
) -> None:
    """Refuse (OutputError, one line) before any work when an output is a folder, names the same file
    as another output, or is one of the inputs.

    `outputs`: {option: path or None}; `inputs`: {option: path(s) or None}; an input folder under
    `images_option` (the PATH arguments) counts as every image file below it.
    """
    given = [(option, os.fspath(path)) for option, path in outputs.items() if path is not None]
    for index, (option, path) in enumerate(given):
        _check_place(option, path)
        _check_distinct(option, path, given[:index])
        _check_not_an_input(option, path, inputs, images_option)


def _check_distinct(option: str, path: str, earlier: list[tuple[str, str]]) -> None:
    for other, other_path in earlier:
        if _same_file(path, other_path):
            raise OutputError(f"{option} {display_name(path)} is also {other}; give each output its own file")


def _check_not_an_input(option: str, path: str, inputs: Mapping[str, Iterable[str] | str | None], images_option: str) -> None:
    for input_option, input_paths in inputs.items():
        for input_path in _as_list(input_paths):
            if _same_file(path, input_path) or (input_option == images_option and _image_under(path, input_path)):
                what = f"{input_option} {display_name(input_path)}" if input_option else display_name(input_path)
                raise OutputError(f"{option} {display_name(path)} is an input of this run ({what}); refusing to overwrite it")


def _as_list(paths: Iterable[str] | str | None) -> list[str]:
    if paths is None:
        return []
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    return [os.fspath(path) for path in paths]


def _check_place(option: str, path: str) -> None:
    """An output is a file, with a name its folder can hold, in a folder that exists (a name ending
    in / means a folder)."""
    if path.endswith(("/", os.sep)) or os.path.isdir(path):
        example = display_name(os.path.join(path, "scores.jsonl"))
        raise OutputError(f"{option} {display_name(path)} is a folder; give a file name (e.g. {example})")
    folder = os.path.dirname(os.path.abspath(path))
    if is_stream_target(path):
        return
    if not os.path.isdir(folder):
        raise OutputError(f"{option} {display_name(path)}: no folder {display_name(folder)} to write it in")
    if len(os.fsencode(os.path.basename(path))) > _name_max(folder):
        raise OutputError(f"{option} {display_name(path)}: file name too long for its folder ({_name_max(folder)} bytes at most)")


def _name_max(folder: str) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):  # a file system that does not say: the common limit
        return 255


def _same_file(first: str, second: str) -> bool:
    """One file under two names: the same resolved path, or (both existing) the same inode.
    Streams (/dev/stdout, FIFOs) are no files to protect."""
    if is_stream_target(first) or is_stream_target(second):
        return False
    if os.path.realpath(first) == os.path.realpath(second):
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:  # one of them does not exist yet
        return False


def _image_under(output: str, folder: str) -> bool:
    """True when the existing file `output` is an image file that scanning `folder` would read."""
    from ..images.decode import IMAGE_EXTENSIONS

    if not os.path.isdir(folder) or not os.path.isfile(output):
        return False
    real = os.path.realpath(output)
    return real.startswith(os.path.realpath(folder).rstrip(os.sep) + os.sep) and real.lower().endswith(IMAGE_EXTENSIONS)
