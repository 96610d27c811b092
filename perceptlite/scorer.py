"""The Python API: ``Scorer(model=...)`` loads a model package once and scores images.

    >>> from perceptlite import Scorer
    >>> scorer = Scorer()                      # the bundled default model
    >>> scorer.score("photo.jpg").iaa          # or a PIL.Image, or an HxWx3 uint8 array
    >>> for result in scorer.score_many(paths): ...

A Scorer is safe to share between threads: decoding runs in the caller's (or the pool's) threads,
and inference is serialised by a lock, so any backend (ONNX Runtime or llama.cpp) is safe and the
CPU is not oversubscribed by concurrent sessions.
"""

from __future__ import annotations

import os
import threading
from typing import Iterable, Iterator

from .backend import Backend, load_backend
from .decode import DEFAULT_MAX_PIXELS
from .manifest import ModelPackage
from .pipeline import ImageInput, ResultCache, ScoreResult, score_group, prepare_item, score_items
from .registry import load_model

__all__ = ["Scorer", "ScoreResult"]


class Scorer:
    """Scores images for aesthetics (iaa), quality (iqa) and structure & texture (ista), 0-100."""

    def __init__(
        self,
        model: str | os.PathLike | ModelPackage | None = None,
        device: str = "auto",
        threads: int | None = None,
        variant: str | None = None,
        *,
        batch_size: int | None = None,
        jobs: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        """`model`: a bundled name, a package folder, or None for the bundled default."""
        self.package = model if isinstance(model, ModelPackage) else load_model(model)
        self.backend: Backend = load_backend(self.package, device=device, threads=threads, variant=variant)
        self.batch_size = batch_size or self.backend.batch_size
        self.jobs = jobs
        self.max_pixels = max_pixels
        self._lock = threading.Lock()

    def score(self, image: ImageInput) -> ScoreResult:
        """Score one image: a file path, a PIL image, or an HxWx3 uint8 RGB numpy array.

        A file that cannot be decoded gives a result with `error` set (it does not raise);
        an array of the wrong shape or type raises ValueError.
        """
        prepared = prepare_item(self.backend, image, self.max_pixels)
        return next(score_group(self.backend, [prepared], None, self._lock))

    def score_many(self, images: Iterable[ImageInput], *, cache: ResultCache | None = None) -> Iterator[ScoreResult]:
        """Score many images, streaming results in input order (decoding in a thread pool)."""
        return score_items(
            self.backend,
            images,
            jobs=self.jobs,
            batch_size=self.batch_size,
            max_pixels=self.max_pixels,
            cache=cache,
            infer_lock=self._lock,
        )

    def __repr__(self) -> str:
        return f"Scorer(model={self.package.name!r} {self.package.version}, backend={self.package.backend})"
