"""Where `filter` and `report` get scores: a previous score file, the cache, or a fresh run."""

from __future__ import annotations

import os
from collections.abc import Callable

import click

from ..errors import PerceptliteError
from ..images.discover import iter_image_files
from ..records import ScoreResult
from ..records.files import read
from .options import device_option, model_option


def score_source_options(function: Callable) -> Callable:
    """Add --from-scores, --cache, --model and --device to a command."""
    options = [
        click.option(
            "--from-scores",
            "from_scores",
            type=click.Path(dir_okay=False),
            help="Take scores from this score file (.jsonl, .json, .csv, .parquet) instead of scoring.",
        ),
        click.option(
            "--cache",
            "cache_path",
            type=click.Path(dir_okay=False),
            help="SQLite score cache: reuse cached scores, score and remember the rest.",
        ),
        model_option(),
        device_option,
    ]
    for option in reversed(options):
        function = option(function)
    return function


def gather_results(
    paths: tuple[str, ...], from_scores: str | None, cache_path: str | None, model: str | None, device: str
) -> list[ScoreResult]:
    """Score records for PATHS (or every record of --from-scores when no PATH is given), in input order."""
    if from_scores:
        if cache_path:
            raise PerceptliteError("--from-scores and --cache both give scores; pass only one")
        results = read(from_scores)
        if not paths:
            return results
        roots = [os.path.normpath(os.path.abspath(path)) for path in paths]
        return [result for result in results if _under_any(result.file, roots)]
    if not paths:
        raise PerceptliteError("give image files or folders to score, or --from-scores FILE")
    files = list(iter_image_files(paths))
    if not files:
        raise PerceptliteError("no image files found")
    return score_paths(files, cache_path, model, device)


def score_paths(files: list[str], cache_path: str | None, model: str | None, device: str) -> list[ScoreResult]:
    """Score files with the model, through the cache when one is given."""
    from ..scorer import ScoreOptions, Scorer

    with Scorer(model, ScoreOptions(device=device, cache=cache_path)) as scorer:
        return list(scorer.score_many(files))


def _under_any(path: str, roots: list[str]) -> bool:
    absolute = os.path.normpath(os.path.abspath(path))
    return any(absolute == root or absolute.startswith(root.rstrip(os.sep) + os.sep) for root in roots)
