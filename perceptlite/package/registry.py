"""Find model packages: ``--model NAME`` (bundled or on PERCEPTLITE_MODEL_PATH) or ``--model FOLDER``.

A bare name never means a folder in the working directory (so a folder there cannot hijack the
default model); a folder is always given as a path, e.g. ``./my-model``.

Bundled packages live in ``perceptlite/models/<name>/`` inside an installed wheel, and in
``<repo>/models/<name>/`` in a source checkout. ``PERCEPTLITE_MODEL_PATH`` adds folders (separated
by ``os.pathsep``), each either a package itself or a folder of packages.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelNotFoundError
from .manifest import MANIFEST_NAME, ModelPackage, ModelPackageError, load_package, read_manifest

DEFAULT_MODEL = "perceptlite-base"
MODEL_PATH_ENV = "PERCEPTLITE_MODEL_PATH"

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # perceptlite/


@dataclass(frozen=True)
class PackageEntry:
    """A model package found on disk (manifest read, hashes not yet checked)."""

    name: str
    version: str
    backend: str
    description: str
    path: Path
    source: str  # "bundled", "env" (PERCEPTLITE_MODEL_PATH) or "given"


def bundled_dirs() -> list[Path]:
    """Folders that hold the bundled packages: inside the installed package, or the repo's models/."""
    candidates = [_PACKAGE_DIR / "models"]
    if (_PACKAGE_DIR.parent / "pyproject.toml").is_file():  # a source checkout (or editable install)
        candidates.append(_PACKAGE_DIR.parent / "models")
    return [folder for folder in candidates if folder.is_dir()]


def env_dirs() -> list[Path]:
    """Folders named by PERCEPTLITE_MODEL_PATH."""
    value = os.environ.get(MODEL_PATH_ENV, "")
    return [Path(part).expanduser() for part in value.split(os.pathsep) if part.strip()]


def iter_packages(extra: Iterable[str | os.PathLike] = ()) -> Iterator[PackageEntry]:
    """Every package found: bundled first, then PERCEPTLITE_MODEL_PATH, then `extra` folders."""
    seen: set[Path] = set()
    sources = [(d, "bundled") for d in bundled_dirs()] + [(d, "env") for d in env_dirs()]
    sources += [(Path(d), "given") for d in extra]
    for folder, source in sources:
        for package_dir in _package_dirs(folder):
            key = package_dir.resolve()
            if key in seen:
                continue
            seen.add(key)
            entry = _entry(package_dir, source)
            if entry is not None:
                yield entry


def resolve_model(model: str | os.PathLike | None = None) -> Path:
    """The package folder for a name or a folder path; None means the bundled default.

    A bare name (no path separator, not starting with ``.`` or ``~``) only ever means a bundled
    package or one on PERCEPTLITE_MODEL_PATH, never a folder of that name in the working
    directory; a folder is named by a path (``./perceptlite-base``, ``/models/mine``) or given as
    a ``pathlib.Path``.
    """
    if model is None or str(model) == "":
        model = DEFAULT_MODEL
    name = os.fspath(model)
    if not isinstance(model, str) or looks_like_path(name):
        folder = Path(name).expanduser()
        if folder.is_dir():
            return folder
        raise ModelNotFoundError(f"{name}: no such model package folder")
    for entry in iter_packages():
        if entry.name == name or entry.path.name == name:
            return entry.path
    local = f"; to use the folder {name} here, pass ./{name}" if Path(name).is_dir() else ""
    if name == DEFAULT_MODEL:
        raise ModelNotFoundError(
            f"no bundled model is installed ({DEFAULT_MODEL} not found); pass --model FOLDER "
            f"with a model package, or reinstall perceptlite{local}"
        )
    known = sorted({entry.name for entry in iter_packages()})
    hint = f"known: {', '.join(known)}" if known else "no packages are installed"
    raise ModelNotFoundError(f"no model package named {name!r} ({hint}); pass a name or a package folder path{local}")


def looks_like_path(name: str) -> bool:
    """Whether --model names a folder (a path) rather than a package name."""
    separators = [os.sep] + ([os.altsep] if os.altsep else [])
    return any(sep in name for sep in separators) or name.startswith((".", "~")) or os.path.isabs(name)


def load_model(model: str | os.PathLike | None = None, verify: bool = True) -> ModelPackage:
    """Resolve and load (hash-checked) a model package."""
    return load_package(resolve_model(model), verify=verify)


def _package_dirs(folder: Path) -> list[Path]:
    if (folder / MANIFEST_NAME).is_file():
        return [folder]
    try:
        children = sorted(folder.iterdir())
    except OSError:
        return []
    return [child for child in children if (child / MANIFEST_NAME).is_file()]


def _entry(folder: Path, source: str) -> PackageEntry | None:
    try:
        raw = read_manifest(folder)
    except ModelPackageError:
        return None
    return PackageEntry(
        name=str(raw.get("name", folder.name)),
        version=str(raw.get("version", "?")),
        backend=str(raw.get("backend", "?")),
        description=str(raw.get("description", "")),
        path=folder,
        source=source,
    )
