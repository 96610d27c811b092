"""`score --cache FILE` and `score --parquet FILE`: the dataset-scale extras of the score command
(--cache itself is declared with the other scoring options, in options.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator

import click

from ..errors import PerceptliteError
from ..records import ScoreResult
from ..records.names import display_name, escape_unsafe
from ..scorer import Scorer
from .options import EXIT_USAGE

parquet_option = click.option(
    "--parquet",
    "parquet_path",
    type=click.Path(dir_okay=False),
    default=None,
    help='Also write the records, with model name and hash, to a Parquet FILE (needs pip install "perceptlite[parquet]").',
)


class DatasetRun:
    """The cache to hand to the pipeline, and `tee`, which also writes each result to Parquet.

    `close` runs when the click context closes (also on Ctrl-C or sys.exit): it commits the
    cache, and puts the Parquet file in place only if every result went through `tee`.
    """

    def __init__(self, cache, cache_path: str | None, parquet, quiet: bool):
        self.cache = cache
        self.cache_path = cache_path
        self.parquet = parquet
        self.quiet = quiet
        self.finished = False

    def tee(self, results: Iterable[ScoreResult]) -> Iterator[ScoreResult]:
        for result in results:
            if self.parquet is not None:
                self.parquet.write(result)
            yield result
        self.finished = True

    def abandon(self) -> None:
        """Publish no Parquet file even though every result went through (the run failed)."""
        self.finished = False

    def publish(self) -> None:
        """Put the finished Parquet file in place now, before the command's other outputs, so that a
        failure here (PerceptliteError) keeps them from being published too."""
        parquet, self.parquet = self.parquet, None
        if parquet is not None and self.finished:
            parquet.close()
        elif parquet is not None:
            parquet.abort()

    def close(self) -> None:
        """Finish (or drop) the Parquet file and commit the cache; a failure is one line and exit 2."""
        problems: list[PerceptliteError] = []
        try:
            if self.parquet is not None:
                self.parquet.close() if self.finished else self.parquet.abort()
        except PerceptliteError as exc:  # e.g. the disk filled up: the unfinished file is gone
            problems.append(exc)
        finally:
            if self.cache is not None:
                problems += self._close_cache()
        for problem in problems:
            click.echo(f"perceptlite: {escape_unsafe(str(problem))}", err=True)
        if problems:
            sys.exit(EXIT_USAGE)

    def _close_cache(self) -> list[PerceptliteError]:
        try:
            self.cache.close()  # commits the last results
        except PerceptliteError as exc:
            return [exc]
        if not self.quiet:
            click.echo(
                f"perceptlite: cache {display_name(self.cache_path or '')}: {self.cache.hits} reused, {self.cache.stored} newly scored",
                err=True,
            )
        return []


def dataset_run(scorer: Scorer, cache_path: str | None, parquet_path: str | None, quiet: bool = False) -> DatasetRun:
    """The scorer's cache and a Parquet writer (one-line error and exit 2 on failure); closed with the click context."""
    parquet = None
    try:
        if parquet_path:
            from ..records.parquet import ParquetScoreWriter

            parquet = ParquetScoreWriter(parquet_path, scorer.package.name, scorer.model_key)
    except PerceptliteError as exc:
        scorer.close()
        click.echo(f"perceptlite: {escape_unsafe(str(exc))}", err=True)
        sys.exit(EXIT_USAGE)
    run = DatasetRun(scorer.cache, cache_path, parquet, quiet)
    click.get_current_context().call_on_close(run.close)
    return run
