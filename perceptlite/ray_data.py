"""Score image datasets on a Ray cluster with Ray Data (``pip install "perceptlite[ray]"``).

:class:`RayScorer` is a callable class for ``Dataset.map_batches``: Ray builds one per worker, so
the model package is loaded and its session created once per worker, not once per batch. A batch
holds image ``path``s (files every worker can read) or image ``bytes`` (e.g. from
``ray.data.read_binary_files(..., include_paths=True)``); the result has the Parquet columns:
path, iaa, iqa, ista, width, height, error, model, model_hash. Example::

    import ray
    from perceptlite.ray_data import score_dataset

    ray.init()                                        # or ray.init(address="auto") on a cluster
    images = ray.data.read_binary_files("s3://bucket/photos/", include_paths=True)
    scores = score_dataset(images, concurrency=4, num_cpus=2)   # GPU: device="cuda", num_gpus=1
    scores.write_parquet("s3://bucket/photo-scores/")

Bytes are decoded exactly as the CLI decodes files (EXIF orientation, JPEG draft decoding), so
the scores equal those of ``perceptlite score`` on the same files.
"""

from __future__ import annotations

import io
import math
import os
from typing import Any, Mapping


from .backend import load_backend
from .decode import DEFAULT_MAX_PIXELS, DecodeError, decode_file
from .pipeline import NOT_A_NUMBER, ScoreResult, error_result, prepare_decoded, score_items
from .preprocess import draft_size
from .registry import load_model

INSTALL_HINT = 'pip install "perceptlite[ray]"'


class RayScorer:
    """A ``map_batches`` callable: loads the model once, then scores each batch of paths or bytes."""

    def __init__(self, model: str | os.PathLike | None = None, device: str = "cpu", threads: int | None = None, variant: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.package = load_model(model)
        self.backend = load_backend(self.package, device=device, threads=threads, variant=variant)
        self.max_pixels = max_pixels

    def __call__(self, batch: Mapping[str, Any]):
        """Score one batch (a dict of columns) and return a pyarrow Table of score rows."""
        paths = [None if p is None else str(p) for p in batch["path"]] if "path" in batch else None
        if "bytes" in batch:
            data = list(batch["bytes"])
            results = self.score_bytes(data, paths or [None] * len(data))
        elif paths is not None:
            results = list(score_items(self.backend, paths, jobs=1))
        else:
            raise ValueError("perceptlite RayScorer: a batch needs a 'path' or a 'bytes' column")
        return self.to_table(results)

    def score_bytes(self, data: list[bytes], paths: list[str | None]) -> list[ScoreResult]:
        """Score encoded images held in memory, decoding them as the CLI decodes files."""
        draft = draft_size(self.package.input)
        prepared: list[tuple[int, int, Any] | ScoreResult] = []
        for blob, path in zip(data, paths):
            try:
                decoded = decode_file(io.BytesIO(bytes(blob)), self.max_pixels, draft)
                prepared.append((decoded.width, decoded.height, prepare_decoded(self.backend, decoded)))
            except DecodeError as exc:
                prepared.append(error_result(path, str(exc)))
            except TypeError:  # decode's reason lookup stats a path; undecodable bytes end here
                prepared.append(error_result(path, "empty or not an image, or a format Pillow cannot read"))
        tensors = [entry[2] for entry in prepared if not isinstance(entry, ScoreResult)]
        scores = iter(self._infer(tensors))
        results = []
        for entry, path in zip(prepared, paths):
            if isinstance(entry, ScoreResult):
                results.append(entry)
            else:
                axes = next(scores)
                if not all(math.isfinite(value) for value in axes.values()):
                    results.append(ScoreResult(path, None, None, None, entry[0], entry[1], NOT_A_NUMBER))
                    continue
                results.append(ScoreResult(path, axes.get("iaa"), axes.get("iqa"), axes.get("ista"), entry[0], entry[1]))
        return results

    def _infer(self, tensors: list) -> list[dict[str, float]]:
        size = self.backend.batch_size
        out: list[dict[str, float]] = []
        for start in range(0, len(tensors), size):
            out += self.backend.infer(tensors[start : start + size])
        return out

    def to_table(self, results: list[ScoreResult]):
        """Score results as a pyarrow Table with the Parquet score columns."""
        from .parquet import parquet_path, schema

        arrow_schema = schema()
        rows = [result.as_dict() for result in results]
        columns = {name: [row.get(name) for row in rows] for name in ("path", "iaa", "iqa", "ista", "width", "height", "error")}
        columns["path"], columns["path_bytes"] = map(list, zip(*map(parquet_path, columns["path"]))) if rows else ([], [])
        columns["model"] = [self.package.name] * len(rows)
        columns["model_hash"] = [self.package.package_hash] * len(rows)
        import pyarrow as pa

        return pa.table(columns, schema=arrow_schema)


def score_dataset(dataset, model: str | os.PathLike | None = None, *, device: str = "cpu", concurrency: int = 1, num_cpus: float = 1, num_gpus: float = 0, batch_size: int = 64, threads: int | None = None):
    """``dataset.map_batches(RayScorer, ...)`` with `concurrency` workers, each holding one model."""
    return dataset.map_batches(
        RayScorer,
        fn_constructor_kwargs={"model": os.fspath(model) if model is not None else None, "device": device, "threads": threads},
        batch_size=batch_size,
        batch_format="numpy",
        concurrency=concurrency,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    )


__all__ = ["RayScorer", "score_dataset"]
