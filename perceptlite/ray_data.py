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

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from .images.decode import DEFAULT_MAX_PIXELS
from .records import ScoreResult
from .scorer import ScoreOptions, Scorer

INSTALL_HINT = 'pip install "perceptlite[ray]"'


class RayScorer:
    """A ``map_batches`` callable: loads the model once (one Scorer), then scores each batch of paths or bytes."""

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        threads: int | None = None,
        variant: str | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        self.scorer = Scorer(model, ScoreOptions(device=device, threads=threads, variant=variant, max_pixels=max_pixels, jobs=1))
        self.package = self.scorer.package

    def __call__(self, batch: Mapping[str, Any]):
        """Score one batch (a dict of columns) and return a pyarrow Table of score rows."""
        paths = [None if p is None else str(p) for p in batch["path"]] if "path" in batch else None
        if "bytes" in batch:
            data = list(batch["bytes"])
            results = self.score_bytes(data, paths or [None] * len(data))
        elif paths is not None:
            results = list(self.scorer.score_many([path or "" for path in paths]))  # no path: "file not found"
        else:
            raise ValueError("perceptlite RayScorer: a batch needs a 'path' or a 'bytes' column")
        return self.to_table(results)

    def score_bytes(self, data: list[bytes], paths: list[str | None]) -> list[ScoreResult]:
        """Score encoded images held in memory, decoded as the CLI decodes files; `paths` name them in the records."""
        scored = self.scorer.score_many(bytes(blob) for blob in data)
        return [dataclasses.replace(result, path=path) for result, path in zip(scored, paths)]

    def to_table(self, results: list[ScoreResult]):
        """Score results as a pyarrow Table with the Parquet score columns."""
        from .records.parquet import arrow_table

        return arrow_table(results, self.package.name, self.scorer.model_key)


def score_dataset(
    dataset,
    model: str | os.PathLike | None = None,
    *,
    device: str = "cpu",
    concurrency: int = 1,
    num_cpus: float = 1,
    num_gpus: float = 0,
    batch_size: int = 64,
    threads: int | None = None,
):
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
