"""Where `filter` and `report` get scores: a previous score file, the cache, or a fresh run; and the
image files of a run, each once."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import click

from ..datasets.file_actions import relative_to_root
from ..errors import PerceptliteError
from ..images.discover import iter_image_files
from ..records import ScoreResult
from ..records.files import read
from .options import Scoring

from_scores_option = click.option(
    "--from-scores",
    "from_scores",
    type=click.Path(dir_okay=False),
    help="Take scores from this score file (.jsonl, .json, .csv, .parquet) instead of scoring.",
)


def unique_files(files: Iterable[str]) -> Iterator[str]:
    """Each file once, under the first name it was found by: the same file given twice, given and
    also found in a given folder, or found through two names of one folder is scored once.

    Names are compared with their folder resolved (links followed) but not the file's own name:
    a symbolic link to an image is a name of its own, and gets its own record.
    """
    seen: set[str] = set()
    folders: dict[str, str] = {}  # each folder resolved once: a run of 20,000 files has few folders
    for path in files:
        folder, name = os.path.split(path)
        real = folders.get(folder)
        if real is None:
            real = folders[folder] = os.path.realpath(folder or ".")
        key = os.path.join(real, name)
        if key not in seen:
            seen.add(key)
            yield path


def gather_results(paths: tuple[str, ...], from_scores: str | None, scoring: Scoring) -> list[ScoreResult]:
    """Score records for PATHS (or every record of --from-scores when no PATH is given), in input order."""
    if from_scores:
        if scoring.cache_path:
            raise PerceptliteError("--from-scores and --cache both give scores; pass only one")
        results = read(from_scores)
        if not paths:
            return results
        return [result for result in results if relative_to_root(result.file, list(paths)) is not None]
    if not paths:
        raise PerceptliteError("give image files or folders to score, or --from-scores FILE")
    files = list(unique_files(iter_image_files(paths)))
    if not files:
        raise PerceptliteError("no image files found")
    return score_paths(files, scoring)


def score_paths(files: list[str], scoring: Scoring) -> list[ScoreResult]:
    """Score files with the model, through the cache when one is given."""
    from ..scorer import Scorer

    with Scorer(scoring.model, scoring.score_options()) as scorer:
        return list(scorer.score_many(files))
