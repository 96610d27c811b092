"""The scoring pipeline: decode + prepare in a bounded thread pool, batched inference, input order.

At most ``window`` items are in flight (submitted to the pool but not yet yielded), so memory stays
flat however many files stream in. Failures become records with an ``error``; the run goes on.
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Protocol, Union

import numpy as np
from PIL import Image

from .backend import Backend
from .decode import DEFAULT_MAX_PIXELS, DecodedImage, DecodeError, check_array, decode_array, decode_file, decode_pil
from .preprocess import draft_size

ImageInput = Union[str, "os.PathLike[str]", Image.Image, np.ndarray]


@dataclass(frozen=True)
class ScoreResult:
    """Scores for one image (0-100, higher is better), or an error with the scores left None."""

    path: str | None
    iaa: float | None
    iqa: float | None
    ista: float | None
    width: int | None
    height: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        """The documented record fields, in order."""
        return {
            "path": self.path,
            "iaa": self.iaa,
            "iqa": self.iqa,
            "ista": self.ista,
            "width": self.width,
            "height": self.height,
            "error": self.error,
        }


class ResultCache(Protocol):
    """Lets a run skip files scored before. `lookup` runs in worker threads, `store` in the caller's."""

    def lookup(self, path: str) -> ScoreResult | None: ...

    def store(self, result: ScoreResult) -> None: ...


@dataclass
class _Prepared:
    path: str | None
    width: int
    height: int
    tensor: Any


def default_jobs() -> int:
    """Decode workers: one per CPU core (decoding releases the GIL), at least 2."""
    return max(2, os.cpu_count() or 1)


def error_result(path: str | None, reason: str) -> ScoreResult:
    return ScoreResult(path, None, None, None, None, None, reason)


def prepare_item(backend: Backend, item: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS, cache: ResultCache | None = None) -> _Prepared | ScoreResult:
    """Decode and prepare one input; a ScoreResult when it failed or the cache already knows it."""
    in_memory = isinstance(item, (Image.Image, np.ndarray))
    path = None if in_memory else os.fspath(item)
    if path is not None and cache is not None:
        cached = cache.lookup(path)
        if cached is not None:
            return cached
    if isinstance(item, np.ndarray):
        check_array(item)  # a wrong shape or dtype is the caller's bug: ValueError
    try:
        if isinstance(item, np.ndarray):
            decoded = decode_array(item, max_pixels)
        elif isinstance(item, Image.Image):
            decoded = decode_pil(item, max_pixels)
        elif path is not None:
            decoded = decode_file(path, max_pixels, draft_size(backend.package.input))
        tensor = prepare_decoded(backend, decoded)
    except DecodeError as exc:
        return error_result(path, str(exc))
    except (OSError, ValueError, MemoryError) as exc:  # resize/convert on a damaged image
        return error_result(path, f"cannot process image ({' '.join(str(exc).split())[:200]})")
    return _Prepared(path, decoded.width, decoded.height, tensor)


def prepare_decoded(backend: Backend, decoded: DecodedImage) -> Any:
    """backend.prepare for a decoded image, passing the draft region to backends that take one."""
    if decoded.box is None:
        return backend.prepare(decoded.image)
    if getattr(backend, "prepare_takes_region", False):
        return backend.prepare(decoded.image, decoded.box)
    # Other backends get the picture without the partly filled edge (closest integer crop).
    return backend.prepare(decoded.image.crop(tuple(round(v) for v in decoded.box)))


def score_items(
    backend: Backend,
    items: Iterable[ImageInput],
    *,
    jobs: int | None = None,
    batch_size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    cache: ResultCache | None = None,
    infer_lock: threading.Lock | None = None,
) -> Iterator[ScoreResult]:
    """Score files / PIL images / arrays, yielding one ScoreResult per item in input order."""
    jobs = jobs or default_jobs()
    batch_size = batch_size or backend.batch_size
    window = max(2 * batch_size, 4 * jobs)
    source = iter(items)
    pending: deque[Future] = deque()
    group: list[_Prepared | ScoreResult] = []  # the items of the batch being filled, in order
    filled = 0
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="perceptlite-decode") as pool:
        try:
            while True:
                while len(pending) < window:
                    item = next(source, _END)
                    if item is _END:
                        break
                    pending.append(pool.submit(prepare_item, backend, item, max_pixels, cache))
                if not pending:
                    break
                outcome = pending.popleft().result()
                group.append(outcome)
                if isinstance(outcome, _Prepared):
                    filled += 1
                if filled >= batch_size or not pending:
                    yield from score_group(backend, group, cache, infer_lock)
                    group, filled = [], 0
            yield from score_group(backend, group, cache, infer_lock)
        finally:
            for future in pending:  # stopped early (error, Ctrl-C, generator closed)
                future.cancel()


_END = object()
NOT_A_NUMBER = "the model's output for this image is not a number (NaN or Infinity); no scores"


def score_group(backend: Backend, group: list, cache: ResultCache | None, infer_lock: threading.Lock | None) -> Iterator[ScoreResult]:
    prepared = [entry for entry in group if isinstance(entry, _Prepared)]
    scores = _infer(backend, [p.tensor for p in prepared], infer_lock) if prepared else []
    by_id = {id(p): s for p, s in zip(prepared, scores)}
    for entry in group:
        if isinstance(entry, ScoreResult):
            yield entry
            continue
        axes = by_id[id(entry)]
        if not all(math.isfinite(value) for value in axes.values()):
            yield ScoreResult(entry.path, None, None, None, entry.width, entry.height, NOT_A_NUMBER)  # never cached
            continue
        result = ScoreResult(entry.path, axes.get("iaa"), axes.get("iqa"), axes.get("ista"), entry.width, entry.height)
        if cache is not None and result.path is not None:
            cache.store(result)
        yield result


def _infer(backend: Backend, tensors: list, infer_lock: threading.Lock | None) -> list[dict[str, float]]:
    if infer_lock is None:
        return backend.infer(tensors)
    with infer_lock:
        return backend.infer(tensors)
