"""The backend interface every model runtime implements, and the factory that picks one.

A backend turns decoded RGB images into scores in two steps, so that the expensive per-image work
runs in the decode thread pool and inference is batched:

- ``prepare(image)``: PIL RGB image -> whatever ``infer`` consumes (e.g. a normalised CHW array).
  Called from several worker threads at once; must be thread-safe and must not touch the model.
- ``infer(batch)``: a list of prepared inputs -> one ``{axis: score 0-100}`` dict per input, in order.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from PIL import Image

from .manifest import ModelPackage, ModelPackageError


class Backend(Protocol):
    package: ModelPackage
    batch_size: int  # a good default batch size for this backend

    def prepare(self, image: Image.Image) -> Any: ...

    def infer(self, batch: Sequence[Any]) -> list[dict[str, float]]: ...


def load_backend(package: ModelPackage, device: str = "auto", threads: int | None = None, variant: str | None = None) -> Backend:
    """Open the runtime that `package.backend` names. Heavy modules are imported only here."""
    if package.backend == "onnx":
        from .onnx_backend import OnnxBackend

        return OnnxBackend(package, device=device, threads=threads, variant=variant)
    if package.backend == "gguf":
        from .gguf_backend import GgufBackend

        return GgufBackend(package, device=device, threads=threads, variant=variant)
    raise ModelPackageError(f"{package.path}: unknown backend {package.backend!r}")
