"""The scoring pipeline: decode + prepare in a bounded thread pool, batched inference, input order.

It only moves work: how to decode and prepare an image is the backend's (``draft_size``,
``prepare``); inference goes through ``backend.infer``. Use it through :class:`perceptlite.Scorer`.
A backend that runs one image at a time and allows several runs at once (``parallel_runs``, e.g.
ONNX Runtime on CPU) is called from the workers themselves, each right after its decode.

At most ``window`` items are in flight (submitted to the pool but not yet yielded), so memory stays
flat however many files stream in. Failures become records with an ``error``; the run goes on.
"""

from __future__ import annotations

import itertools
import math
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, Union

import numpy as np
from PIL import Image

from .backends.base import Backend
from .backends.preprocess import input_bytes
from .errors import ImageInferenceError, one_line
from .images.decode import (
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    DecodeError,
    Views,
    check_array,
    decode_array,
    decode_bytes,
    decode_file,
    decode_pil,
    enable_plugins,
)
from .records import ScoreResult, error_result, scored_result

# What the pipeline scores: a file path, the bytes of an encoded image, a PIL image, or an
# HxWx3 (RGB) / HxW (gray) uint8 array.
ImageInput = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, Image.Image, np.ndarray]
InferGate = AbstractContextManager[Any]  # a lock, or a semaphore of backend.parallel_runs


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
    scores: dict[str, float] | str | None = None  # set when a worker already ran the model; str: why it failed


def default_jobs() -> int:
    """Decode workers: one per CPU core (decoding releases the GIL), at least 2."""
    return max(2, os.cpu_count() or 1)


_ENCODED = (bytes, bytearray, memoryview)


def prepare_item(
    backend: Backend, item: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS, cache: ResultCache | None = None
) -> _Prepared | ScoreResult:
    """Decode (as the backend asks) and prepare one input; a ScoreResult when it failed or the
    cache already knows it. Only file paths have a `path` (and are cached)."""
    in_memory = isinstance(item, (Image.Image, np.ndarray, *_ENCODED))
    path = None if in_memory else os.fspath(item)  # type: ignore[arg-type]
    if path is not None and cache is not None:
        cached = cache.lookup(path)
        if cached is not None:
            return cached
    if isinstance(item, np.ndarray):
        check_array(item)  # a wrong shape or dtype is the caller's bug: ValueError
    try:
        if isinstance(item, (np.ndarray, Image.Image)):  # already in memory: nothing to reserve
            decoded = decode_array(item, max_pixels) if isinstance(item, np.ndarray) else decode_pil(item, max_pixels)
            prepared = backend.prepare(decoded.image, decoded.box)
        else:
            # The views are made inside the decode's memory reservation (a crops model holds the
            # full-size decode until its crops are cut), their own bytes counted with it.
            views = Views(backend.prepare, input_bytes(backend.package.input))
            if isinstance(item, _ENCODED):
                decoded = decode_bytes(item, max_pixels, backend.draft_size, views)
            else:
                decoded = decode_file(path, max_pixels, backend.draft_size, views)  # type: ignore[arg-type]
            prepared = decoded.prepared
    except DecodeError as exc:
        return error_result(path, str(exc))
    except (OSError, ValueError, MemoryError) as exc:  # resize/convert on a damaged image
        return error_result(path, f"cannot process image ({one_line(exc)})")
    return _Prepared(path, decoded.width, decoded.height, prepared)


def decode_item(item: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int | None = None) -> DecodedImage:
    """Decode any input the pipeline scores to upright RGB; DecodeError with a one-line reason,
    ValueError for an array of the wrong shape or type (the caller's bug)."""
    if isinstance(item, np.ndarray):
        return decode_array(item, max_pixels)
    if isinstance(item, Image.Image):
        return decode_pil(item, max_pixels)
    if isinstance(item, _ENCODED):
        return decode_bytes(item, max_pixels, draft_size)
    return decode_file(os.fspath(item), max_pixels, draft_size)


def prepare_and_infer(
    backend: Backend, item: ImageInput, max_pixels: int, cache: ResultCache | None, infer_gate: InferGate | None
) -> _Prepared | ScoreResult:
    """prepare_item, then the model on this one image (in the worker's thread)."""
    outcome = prepare_item(backend, item, max_pixels, cache)
    if isinstance(outcome, _Prepared):
        outcome.scores = _infer_each(backend, [outcome.tensor], infer_gate)[0]
        outcome.tensor = None  # its memory is not needed while it waits for its turn in the output
    return outcome


def score_items(
    backend: Backend,
    items: Iterable[ImageInput],
    *,
    jobs: int | None = None,
    batch_size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    cache: ResultCache | None = None,
    infer_gate: InferGate | None = None,
) -> Iterator[ScoreResult]:
    """Score files / PIL images / arrays, yielding one ScoreResult per item in input order.
    `infer_gate`: held around every inference call (a lock, or a semaphore of ``backend.parallel_runs``)."""
    jobs = jobs or default_jobs()
    batch_size = batch_size or backend.batch_size
    in_workers = batch_size == 1 and backend.parallel_runs > 1
    work = partial(prepare_and_infer, infer_gate=infer_gate) if in_workers else prepare_item
    window = max(2 * batch_size, 4 * jobs)
    source = iter(items)
    enable_plugins()  # Pillow's format tables are changed once, here, before any worker opens a file
    pending: deque[Future] = deque()
    group: list[_Prepared | ScoreResult] = []  # the items of the batch being filled, in order
    filled = 0
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="perceptlite-decode") as pool:
        try:
            while True:
                for item in itertools.islice(source, window - len(pending)):  # top up to `window` in flight
                    pending.append(pool.submit(work, backend, item, max_pixels, cache))
                if not pending:
                    break
                outcome = pending.popleft().result()
                group.append(outcome)
                if isinstance(outcome, _Prepared):
                    filled += 1
                if filled >= batch_size or not pending:
                    yield from score_group(backend, group, cache, infer_gate)
                    group, filled = [], 0
            yield from score_group(backend, group, cache, infer_gate)
        finally:
            for future in pending:  # stopped early (error, Ctrl-C, generator closed)
                future.cancel()


NOT_A_NUMBER = "the model's output for this image is not a number (NaN or Infinity); no scores"


def score_group(backend: Backend, group: list, cache: ResultCache | None, infer_gate: InferGate | None) -> Iterator[ScoreResult]:
    prepared = [entry for entry in group if isinstance(entry, _Prepared) and entry.scores is None]
    scores = _infer_each(backend, [p.tensor for p in prepared], infer_gate) if prepared else []
    for entry, axes in zip(prepared, scores):
        entry.scores = axes
    for entry in group:
        if isinstance(entry, ScoreResult):
            yield entry
            continue
        axes = entry.scores
        if isinstance(axes, str):
            yield error_result(entry.path, axes, entry.width, entry.height)  # never cached
            continue
        if not all(math.isfinite(value) for value in axes.values()):
            yield error_result(entry.path, NOT_A_NUMBER, entry.width, entry.height)  # never cached
            continue
        result = scored_result(entry.path, axes, entry.width, entry.height)
        if cache is not None and result.path is not None:
            cache.store(result)
        yield result


def _infer_each(backend: Backend, tensors: list, infer_gate: InferGate | None) -> list[dict[str, float] | str]:
    """backend.infer, where an image the model cannot score (ImageInferenceError) gives its reason
    instead of scores; a failed batch is retried one image at a time to find which one failed."""
    try:
        return list(_infer(backend, tensors, infer_gate))
    except ImageInferenceError as exc:
        if len(tensors) == 1:
            return [one_line(exc)]
    return [outcome for tensor in tensors for outcome in _infer_each(backend, [tensor], infer_gate)]


def _infer(backend: Backend, tensors: list, infer_gate: InferGate | None) -> list[dict[str, float]]:
    if infer_gate is None:
        return backend.infer(tensors)
    with infer_gate:
        return backend.infer(tensors)
