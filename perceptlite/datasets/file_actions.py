"""Copy, move or link files into a target folder, keeping their relative paths, safely.

Guarantees, whatever the file names contain (``..``, leading ``/``, newlines, dashes):

- nothing is written outside the target: relative paths with empty, ``.`` or ``..`` parts are
  refused, and every folder inside the target is opened with ``O_NOFOLLOW`` relative to its
  parent's descriptor, so a symbolic link planted in the target cannot redirect a write;
- nothing is overwritten: a file appears under its final name by ``link()``/``symlink()``, which
  fail when the name exists; the conflict policy then decides (error, skip or rename);
- a copy never appears half-written: it is written to a temporary name in the destination folder,
  fsynced, then linked to its final name; a move is such a copy followed by deleting the source,
  so it is safe across file systems.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import PerceptliteError

ACTIONS = ("copy", "move", "link")
LINK_TYPES = ("symlink", "hardlink")
CONFLICT_POLICIES = ("error", "skip", "rename")
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class FileActionError(PerceptliteError):
    """A copy/move/link that was refused or failed; one line naming the file."""


class ConflictError(FileActionError):
    """The destination name already exists (and the policy is ``error``)."""


@dataclass
class Planned:
    """One file to copy/move/link: `source` as given, `relative` its path inside the target."""

    source: str
    relative: str
    skip: bool = False  # the destination exists and the policy is "skip"


def safe_relative(relative: str) -> str:
    """`relative` if it is a plain path inside a folder; FileActionError for '', '.', '..' or absolute ones."""
    parts = relative.split(os.sep)
    if os.path.isabs(relative) or not relative or any(part in ("", ".", "..") for part in parts) or "\0" in relative:
        raise FileActionError(f"{relative!r}: refusing a destination that is not a plain path inside the target folder")
    return relative


def resolved(path: str) -> str:
    """`path` absolute, with its folders' symbolic links and ``..`` resolved the way the system
    resolves them when it opens the file; the file's own name is kept (a link is a name of its own)."""
    folder, name = os.path.split(path)  # not abspath first: it would drop "link/.." as text
    if name in ("", ".", ".."):
        return os.path.realpath(path)
    return os.path.join(os.path.realpath(folder or "."), name)


def relative_to_root(path: str, roots: list[str]) -> str | None:
    """The path of `path` below the first root that holds it (a file root gives its own name).

    Both are compared as resolved paths: a record's path that passes through a link and ``..``
    is placed by the file it names, never by how its text reads."""
    absolute = resolved(path)
    for root in roots:
        base = os.path.realpath(root)
        if absolute in (base, resolved(root)):
            return os.path.basename(absolute)
        if absolute.startswith(base.rstrip(os.sep) + os.sep):
            return absolute[len(base.rstrip(os.sep)) + 1 :]
    return None


class TargetFolder:
    """A destination folder, opened once; every operation works relative to its descriptor."""

    def __init__(self, path: str | os.PathLike, create: bool = True):
        self.path = os.fspath(path)
        try:
            if create:
                os.makedirs(self.path, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            self.fd = -1  # dry run on a target that does not exist yet: nothing in it conflicts
        except OSError as exc:
            raise FileActionError(f"{self.path}: cannot use as target folder ({exc.strerror or exc})") from None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> TargetFolder:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def display(self, relative: str) -> str:
        return os.path.join(self.path, relative)

    def exists(self, relative: str) -> bool:
        """Whether anything (a file, folder or dangling link) already has this name in the target."""
        parts = safe_relative(relative).split(os.sep)
        if self.fd < 0:
            return False
        try:
            parent = self._open_parent(parts[:-1], create=False)
        except FileNotFoundError:
            return False
        try:
            os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            return True
        except FileNotFoundError:
            return False
        finally:
            os.close(parent)

    def copy(self, source: str, relative: str) -> None:
        """Copy `source` to `relative` via a fsynced temp file; ConflictError if the name exists."""
        parts = safe_relative(relative).split(os.sep)
        parent = self._open_parent(parts[:-1], create=True)
        try:
            temp = self._write_temp(source, parent, parts[-1])
            try:
                self._publish(temp, parts[-1], parent, relative)
            finally:
                _unlink_quietly(temp, parent)
            os.fsync(parent)
        finally:
            os.close(parent)

    def move(self, source: str, relative: str) -> None:
        """Copy (fsynced, published without overwriting), then delete the source."""
        self.copy(source, relative)
        try:
            os.unlink(source)
        except OSError as exc:
            raise FileActionError(
                f"{source}: copied to {self.display(relative)} but cannot delete the source ({exc.strerror or exc})"
            ) from None

    def link(self, source: str, relative: str, link_type: str = "symlink") -> None:
        """Make a symbolic link (to the source's absolute path) or a hard link at `relative`."""
        parts = safe_relative(relative).split(os.sep)
        parent = self._open_parent(parts[:-1], create=True)
        try:
            if link_type == "symlink":
                os.symlink(os.path.abspath(source), parts[-1], dir_fd=parent)
            else:
                os.link(source, parts[-1], dst_dir_fd=parent)
        except FileExistsError:
            raise ConflictError(f"{self.display(relative)}: already exists") from None
        except OSError as exc:
            raise FileActionError(f"{source}: cannot {link_type} into {self.display(relative)} ({exc.strerror or exc})") from None
        finally:
            os.close(parent)

    def _open_parent(self, folders: list[str], create: bool) -> int:
        """A descriptor of the folder `folders` inside the target, never following a symbolic link."""
        current = os.dup(self.fd)
        try:
            for name in folders:
                if create:
                    try:
                        os.mkdir(name, dir_fd=current)
                    except FileExistsError:
                        pass
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=current)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise FileActionError(
                            f"{self.path}: {name!r} inside the target is a link or a file, not a folder; refusing to write through it"
                        ) from None
                    raise
                os.close(current)
                current = child
            return current
        except BaseException:
            os.close(current)
            raise

    def _write_temp(self, source: str, parent: int, name: str) -> str:
        for attempt in range(100):
            temp = f".pl-{os.getpid()}-{attempt}.tmp"  # short: fits beside any valid name
            try:
                fd = os.open(temp, _NEW_FILE_FLAGS, 0o600, dir_fd=parent)
                break
            except FileExistsError:
                continue
        else:
            raise FileActionError(f"{self.path}: cannot create a temporary file for {name!r}")
        try:
            with open(source, "rb") as reader, os.fdopen(fd, "wb", closefd=False) as writer:
                shutil.copyfileobj(reader, writer, 1 << 20)
                writer.flush()
                info = os.fstat(reader.fileno())
            os.fchmod(fd, info.st_mode & 0o777)
            os.utime(fd, ns=(info.st_atime_ns, info.st_mtime_ns))
            os.fsync(fd)
        except BaseException as exc:  # also Ctrl-C and SIGTERM: no partial copy stays behind
            os.close(fd)
            _unlink_quietly(temp, parent)
            if isinstance(exc, OSError):
                raise FileActionError(f"{source}: cannot copy ({exc.strerror or exc})") from None
            raise
        os.close(fd)
        return temp

    def _publish(self, temp: str, name: str, parent: int, relative: str) -> None:
        """Give the finished temp file its final name; never replace an existing one."""
        try:
            os.link(temp, name, src_dir_fd=parent, dst_dir_fd=parent, follow_symlinks=False)
            return
        except FileExistsError:
            raise ConflictError(f"{self.display(relative)}: already exists") from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
                raise FileActionError(f"{self.display(relative)}: cannot create ({exc.strerror or exc})") from None
        # File systems without hard links: check, then rename (a narrow race instead of none).
        try:
            os.stat(name, dir_fd=parent, follow_symlinks=False)
            raise ConflictError(f"{self.display(relative)}: already exists")
        except FileNotFoundError:
            os.rename(temp, name, src_dir_fd=parent, dst_dir_fd=parent)


def renamed(relative: str, attempt: int) -> str:
    """`a/b.jpg` -> `a/b-1.jpg` for attempt 1, and so on."""
    folder, name = os.path.split(relative)
    stem, extension = os.path.splitext(name)
    return os.path.join(folder, f"{stem}-{attempt}{extension}")


def plan(items: Iterable[tuple[str, str]], target: TargetFolder, on_conflict: str = "error") -> list[Planned]:
    """Resolve destinations for (source, relative) pairs under the conflict policy, touching nothing.

    Conflicts are names that exist in the target or that two sources would share. With "error"
    the first conflict raises ConflictError before anything is done.
    """
    planned: list[Planned] = []
    taken: set[str] = set()
    for source, relative in items:
        entry = _resolve(source, safe_relative(relative), target, taken, on_conflict)
        if not entry.skip:
            taken.add(entry.relative)
        planned.append(entry)
    return planned


def _resolve(source: str, relative: str, target: TargetFolder, taken: set[str], on_conflict: str) -> Planned:
    candidate, attempt = relative, 0
    while candidate in taken or target.exists(candidate):
        if on_conflict == "error":
            reason = "two files would get this name" if candidate in taken else "already exists"
            raise ConflictError(f"{target.display(candidate)}: {reason} (for {source!r}); use --on-conflict skip or rename")
        if on_conflict == "skip":
            return Planned(source, candidate, skip=True)
        attempt += 1
        candidate = renamed(relative, attempt)
    return Planned(source, candidate)


def execute(entry: Planned, target: TargetFolder, action: str, on_conflict: str = "error", link_type: str = "symlink") -> Planned:
    """Carry out one planned action; a name taken since planning is handled by the policy again."""
    attempt = 0
    base = entry.relative
    while True:
        try:
            if action == "copy":
                target.copy(entry.source, entry.relative)
            elif action == "move":
                target.move(entry.source, entry.relative)
            else:
                target.link(entry.source, entry.relative, link_type)
            return entry
        except ConflictError:
            if on_conflict == "error":
                raise
            if on_conflict == "skip":
                entry.skip = True
                return entry
            attempt += 1
            entry.relative = renamed(base, attempt)


def _unlink_quietly(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
