"""Exceptions whose message is one line a user can act on (the CLI prints it, never a traceback)."""

from __future__ import annotations

from .manifest import ModelPackageError

__all__ = ["PerceptliteError", "ModelNotFoundError", "DeviceError", "ModelPackageError"]


class PerceptliteError(Exception):
    """Base class for user-facing errors; ``str(error)`` is one line."""


class ModelNotFoundError(PerceptliteError):
    """``--model`` names no bundled package and no folder."""


class DeviceError(PerceptliteError):
    """The asked ``--device`` has no execution provider in this ONNX Runtime."""
