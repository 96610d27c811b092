"""The one way from a model to scores: ``Scorer(model, options)`` loads a model package once and scores images.

    >>> from perceptlite import Scorer, ScoreOptions
    >>> scorer = Scorer()                      # the bundled default model
    >>> scorer.score("photo.jpg").iaa          # or bytes, a PIL.Image, or an HxWx3 uint8 array
    >>> for result in scorer.score_many(paths): ...
    >>> Scorer("path/to/package", ScoreOptions(device="cuda", batch_size=32))
    >>> Scorer(device="cpu", threads=2)       # the same options as keywords
    >>> scorer.quality_map("photo.jpg").cells  # iqa of each cell of a grid (perceptlite/maps)

Every command, :mod:`perceptlite.ray_data`, the reward helper and ``export``'s evaluation score
through a Scorer. A Scorer is safe to share between threads: decoding runs in the caller's (or the
pool's) threads, and at most ``backend.parallel_runs`` inference calls run at once (ONNX Runtime on
CPU: one single-threaded run per core; llama.cpp and GPUs: one), so any backend is safe and the CPU
is not oversubscribed.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .backends.base import Backend, load_backend
from .datasets.cache import ScoreCache, model_key
from .images.decode import DEFAULT_MAX_PIXELS
from .images.memory import set_decode_memory
from .maps import QualityMap, check_map_support, make_map
from .package.manifest import ModelPackage
from .package.registry import load_model
from .pipeline import ImageInput, ResultCache, decode_item, default_jobs, prepare_item, score_group, score_items
from .records import ScoreResult

__all__ = ["Scorer", "ScoreOptions", "ScoreResult", "QualityMap"]


@dataclass(frozen=True)
class ScoreOptions:
    """How a Scorer runs a model; every field has the CLI option of the same name."""

    device: str = "auto"  # auto, cpu or cuda
    threads: int | None = None  # inference threads [default: all cores]
    variant: str | None = None  # weight variant, e.g. fp32 or int8 [default: the package's]
    jobs: int | None = None  # decode worker threads [default: one per core, at least 2]
    batch_size: int | None = None  # images per inference batch [default: the backend's]
    max_pixels: int = DEFAULT_MAX_PIXELS  # refuse images with more pixels (decompression-bomb guard)
    decode_memory: int | None = None  # bytes image decoding may hold at once, process-wide [default: 1 GiB]
    cache: str | os.PathLike[str] | None = None  # SQLite score cache: reuse scores of unchanged files

    def __post_init__(self) -> None:
        """The CLI's checks of the same options (its IntRange limits), so the API cannot take 0 or -1."""
        for name in ("threads", "jobs", "batch_size", "decode_memory"):
            _check_count(name, getattr(self, name), optional=True)
        _check_count("max_pixels", self.max_pixels, optional=False)


def _check_count(name: str, value: Any, optional: bool) -> None:
    """ValueError unless `value` is a whole number >= 1 (or None when `optional`)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        default = " or None for the default" if optional else ""
        raise ValueError(f"{name} must be a whole number >= 1{default}, not {value!r}")


class Scorer:
    """Scores images for aesthetics (iaa), quality (iqa) and structure & texture (ista), 0-100."""

    def __init__(self, model: str | os.PathLike[str] | ModelPackage | None = None, options: ScoreOptions | None = None, **fields: Any):
        """`model`: a bundled name, a package folder, or None for the bundled default.
        `options`: a ScoreOptions; keyword `fields` (device=..., threads=...) replace its fields."""
        self.options = dataclasses.replace(options or ScoreOptions(), **fields)
        self.package = model if isinstance(model, ModelPackage) else load_model(model)
        self.backend: Backend = load_backend(
            self.package,
            device=self.options.device,
            threads=self.options.threads,
            variant=self.options.variant,
            batch_size=self.options.batch_size,
            workers=self.options.jobs or default_jobs(),
        )
        self.batch_size = self.options.batch_size or self.backend.batch_size
        if self.options.decode_memory is not None:
            set_decode_memory(self.options.decode_memory)
        # Who computes these scores (variant, weights, calibration...): the cache's key, also written
        # as Parquet's model_hash so `merge` refuses exactly the shards the cache would not mix.
        self.model_key = model_key(self.package, self.options.variant)
        self.cache: ScoreCache | None = None
        if self.options.cache is not None:
            self.cache = ScoreCache(self.options.cache, self.model_key)
        self._infer_gate = threading.BoundedSemaphore(self.backend.parallel_runs)

    def score(self, image: ImageInput) -> ScoreResult:
        """Score one image: a file path, the bytes of an image file, a PIL image, or an HxWx3 uint8 RGB array.

        A file that cannot be decoded gives a result with `error` set (it does not raise);
        an array of the wrong shape or type raises ValueError.
        """
        prepared = prepare_item(self.backend, image, self.options.max_pixels, self.cache)
        return next(score_group(self.backend, [prepared], self.cache, self._infer_gate))

    def score_many(self, images: Iterable[ImageInput], *, cache: ResultCache | None = None) -> Iterator[ScoreResult]:
        """Score many images, streaming results in input order (decoding in a thread pool).
        `cache` replaces the options' cache for this call."""
        return score_items(
            self.backend,
            images,
            jobs=self.options.jobs,
            batch_size=self.batch_size,
            max_pixels=self.options.max_pixels,
            cache=cache if cache is not None else self.cache,
            infer_gate=self._infer_gate,
        )

    def quality_map(self, image: ImageInput, grid: tuple[int, int] | None = None) -> QualityMap:
        """Where in the image the quality is: the iqa of each cell of a grid (rows, cols) [default:
        cells about one model crop across], on the scale of the image's iqa, which it holds too.

        Raises QualityMapError for a package that reads no crops, DecodeError for an image that
        cannot be decoded, ValueError for an array of the wrong shape or type.
        """
        check_map_support(self.backend)
        decoded = decode_item(image, self.options.max_pixels, self.backend.draft_size)
        path = os.fspath(image) if isinstance(image, (str, os.PathLike)) else None
        return make_map(self.backend, decoded, path, grid, self._infer_gate)

    def close(self) -> None:
        """Commit and close the score cache, if any (the model itself needs no closing)."""
        if self.cache is not None:
            self.cache.close()

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Scorer(model={self.package.name!r} {self.package.version}, backend={self.package.backend})"
