"""`perceptlite merge`: join the outputs of `score --shard I/N` runs into one score file.

Exit codes: 0 merged, 2 usage or input errors (an unreadable file, a duplicate path, a missing shard).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import click

from ..errors import PerceptliteError
from ..images.discover import iter_image_files
from ..records import ScoreResult
from ..records.files import format_of, read, write
from ..records.names import display_name
from ..records.publish import check_outputs
from .options import exits_on_errors

MAX_LISTED = 5


def path_sort_key(path: str) -> tuple[str, ...]:
    """Order records as discovery does: folder by folder, names sorted within each folder."""
    return tuple(os.path.normpath(path).split(os.sep))


def merge_results(sources: Iterable[str]) -> list[ScoreResult]:
    """Every record of the shard outputs, in deterministic path order; raises on a duplicate path."""
    seen: dict[str, str] = {}
    merged: list[ScoreResult] = []
    for source in sources:
        for result in read(source):
            key = os.path.normpath(os.path.abspath(result.file))
            if key in seen:
                raise PerceptliteError(
                    f"{source}: {result.file!r} is also in {seen[key]} (overlapping shards or the same output twice); merge each shard once"
                )
            seen[key] = source
            merged.append(result)
    merged.sort(key=lambda result: path_sort_key(result.file))
    return merged


def missing_files(results: list[ScoreResult], roots: Iterable[str]) -> list[str]:
    """Image files under `roots` that no record covers."""
    covered = {os.path.normpath(os.path.abspath(result.file)) for result in results}
    return [path for path in iter_image_files(roots) if os.path.normpath(os.path.abspath(path)) not in covered]


def _parquet_model(sources: list[str]) -> tuple[str | None, str | None]:
    """The model name and key recorded in Parquet inputs; raises if they disagree.

    `model_hash` is the score cache's model key (weight variant, weight hashes, calibration and
    every other manifest field that changes the numbers), so shards are mixed exactly when the
    cache would serve one run's scores to the other."""
    found: dict[tuple[str | None, str | None], str] = {}
    for source in sources:
        if format_of(source) != "parquet":
            continue
        from ..records.parquet import read_parquet

        for number, row in enumerate(read_parquet(source), 1):
            model = (row.get("model"), row.get("model_hash"))
            if not all(value is None or isinstance(value, str) for value in model):
                raise PerceptliteError(f"{source}: record {number} has a bad model or model_hash (not text)")
            found.setdefault(model, source)
    if len(found) > 1:
        (first, a), (second, b) = list(found.items())[:2]
        raise PerceptliteError(
            f"{b}: scored with model {second[0]} (key {second[1]}) but {a} with {first[0]} (key {first[1]}): "
            "another model, weight variant or calibration; merge outputs of one model run only"
        )
    return next(iter(found), (None, None))


@click.command("merge")
@click.argument("outputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Merged file; its extension picks the format (.jsonl, .json, .csv, .parquet).",
)
@click.option(
    "--check",
    "check_roots",
    multiple=True,
    type=click.Path(exists=True),
    help="Folder or file that was scored; fail if an image under it is in no output (repeatable).",
)
@exits_on_errors
def command(outputs: tuple[str, ...], output: str, check_roots: tuple[str, ...]) -> None:
    """Join the score files of sharded runs (OUTPUTS) into one, ordered by path; duplicates are an error."""
    sources = list(outputs)
    check_outputs({"-o": output}, {"": sources, "--check": check_roots})
    format_of(output)
    model, model_hash = _parquet_model(sources)
    results = merge_results(sources)
    if check_roots:
        missing = missing_files(results, check_roots)
        if missing:
            listed = ", ".join(repr(path) for path in missing[:MAX_LISTED])
            more = f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
            raise PerceptliteError(f"{len(missing)} image(s) are in no output: {listed}{more}; is a shard missing?")
    try:
        with write(output, model=model, model_hash=model_hash) as writer:
            for result in results:
                writer.write(result)
    except OSError as exc:  # a missing or read-only folder, a full disk, a name too long: nothing was written
        raise PerceptliteError(f"{output}: cannot write ({exc.strerror or exc})") from None
    click.echo(f"merged {len(results)} records from {len(sources)} files into {display_name(output)}", err=True)
