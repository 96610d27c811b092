"""Exceptions whose message is one line a user can act on (the CLI prints it, never a traceback)."""

from __future__ import annotations

__all__ = ["PerceptliteError", "ModelNotFoundError", "DeviceError", "ModelPackageError", "ImageInferenceError"]


class PerceptliteError(Exception):
    """Base class for user-facing errors; ``str(error)`` is one line."""


class ModelPackageError(PerceptliteError):
    """A model package that cannot be used (bad manifest, missing or corrupt file)."""


class ModelNotFoundError(PerceptliteError):
    """``--model`` names no bundled package and no folder."""


class DeviceError(PerceptliteError):
    """The asked ``--device`` has no execution provider in this ONNX Runtime."""


class ImageInferenceError(PerceptliteError):
    """The model could not score one image (a runtime failure or a failed health check): that
    image gets an error record and the run goes on."""


def one_line(error: BaseException | str, limit: int = 200) -> str:
    """An exception's message (or a text) on one line, at most `limit` characters."""
    text = " ".join(str(error).split()) or (type(error).__name__ if isinstance(error, BaseException) else "")
    return text[:limit]
