"""Find model packages: ``--model NAME`` (bundled or on PERCEPTLITE_MODEL_PATH) or ``--model FOLDER``.

Bundled packages live in ``perceptlite/models/<name>/`` inside an installed wheel, and in
``<repo>/models/<name>/`` in a source checkout. ``PERCEPTLITE_MODEL_PATH`` adds folders (separated
by ``os.pathsep``), each either a package itself or a folder of packages.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from .errors import ModelNotFoundError
from .manifest import MANIFEST_NAME, ModelPackage, ModelPackageError, load_package, read_manifest

DEFAULT_MODEL = "perceptlite-base"
MODEL_PATH_ENV = "PERCEPTLITE_MODEL_PATH"

_PACKAGE_DIR = Path(__file__).resolve().parent


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
    """The package folder for a name or a folder path; None means the bundled default."""
    if model is None or str(model) == "":
        model = DEFAULT_MODEL
    candidate = Path(model).expanduser()
    if candidate.is_dir():
        return candidate
    name = str(model)
    looks_like_path = os.sep in name or (os.altsep and os.altsep in name) or name.startswith(".")
    if not looks_like_path:
        for entry in iter_packages():
            if entry.name == name or entry.path.name == name:
                return entry.path
    if looks_like_path or candidate.exists():
        raise ModelNotFoundError(f"{name}: no such model package folder")
    if name == DEFAULT_MODEL:
        raise ModelNotFoundError(
            f"no bundled model is installed ({DEFAULT_MODEL} not found); pass --model FOLDER "
            "with a model package, or reinstall perceptlite"
        )
    known = sorted({entry.name for entry in iter_packages()})
    hint = f"known: {', '.join(known)}" if known else "no packages are installed"
    raise ModelNotFoundError(f"no model package named {name!r} ({hint}); pass a name or a package folder")


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
