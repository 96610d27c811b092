"""Exceptions whose message is one line a user can act on (the CLI prints it, never a traceback)."""

from __future__ import annotations

__all__ = ["PerceptliteError", "ModelNotFoundError", "DeviceError", "ModelPackageError"]


class PerceptliteError(Exception):
    """Base class for user-facing errors; ``str(error)`` is one line."""


class ModelPackageError(PerceptliteError):
    """A model package that cannot be used (bad manifest, missing or corrupt file)."""


class ModelNotFoundError(PerceptliteError):
    """``--model`` names no bundled package and no folder."""


class DeviceError(PerceptliteError):
    """The asked ``--device`` has no execution provider in this ONNX Runtime."""

