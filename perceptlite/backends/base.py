"""The backend interface every model runtime implements, and the factory that picks one.

A backend owns its input contract, so the pipeline only moves work:

- ``draft_size``: how to decode for it: the smallest side a JPEG may be draft-decoded to (DCT
  scaling) without changing what the model sees; None for a full-resolution decode.
- ``prepare(image, region)``: a decoded RGB image (and `region`, the part of a draft-decoded image
  that holds the picture, or None for all of it) -> whatever ``infer`` consumes, possibly several
  views of the image (the ONNX backend: the whole image and its native-resolution crops). Called
  from several worker threads at once; must be thread-safe and must not touch the model.
- ``infer(batch)``: a list of prepared inputs -> one ``{axis: score 0-100}`` dict per input, in order.
- ``parallel_runs``: how many ``infer`` calls may run at once, each from its own thread (1: one at a time).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from PIL import Image

from ..package.manifest import ModelPackage, ModelPackageError
from .preprocess import Region


class Backend(Protocol):
    package: ModelPackage
    batch_size: int  # a good default batch size for this backend
    draft_size: int | None
    parallel_runs: int

    def prepare(self, image: Image.Image, region: Region | None = None) -> Any: ...

    def infer(self, batch: Sequence[Any]) -> list[dict[str, float]]: ...


def load_backend(
    package: ModelPackage,
    device: str = "auto",
    threads: int | None = None,
    variant: str | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
) -> Backend:
    """Open the runtime that `package.backend` names. Heavy modules are imported only here.
    `batch_size`: the batch size the caller asked for, if any (None: the backend's default);
    `workers`: how many threads will call it (the pipeline's decode workers; None: one per core)."""
    if package.backend == "onnx":
        from .onnx import OnnxBackend

        return OnnxBackend(package, device=device, threads=threads, variant=variant, batch_size=batch_size, workers=workers)
    if package.backend == "gguf":
        from .gguf import GgufBackend

        return GgufBackend(package, device=device, threads=threads, variant=variant)
    raise ModelPackageError(f"{package.path}: unknown backend {package.backend!r}")
