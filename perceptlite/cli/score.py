"""`perceptlite score PATH...`: score image files and folders, write a table, JSON, JSONL, CSV or Parquet.

Exit codes: 0 every file scored, 1 some files could not be scored (their records carry `error`),
2 usage, model or input errors (bad options, missing paths, a model that cannot be found or
loaded, no image files found, an output that is an input or another output). Outputs (-o, --parquet)
are published only when the run ends with 0 or 1.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator

import click

from ..backends.preprocess import input_bytes
from ..errors import PerceptliteError
from ..images.decode import DEFAULT_MAX_PIXELS
from ..images.discover import iter_image_files, parse_shard
from ..images.memory import DEFAULT_DECODE_MEMORY
from ..package.manifest import ModelPackage
from ..package.registry import load_model
from ..records import ScoreResult
from ..records.files import write
from ..records.names import display_name
from ..records.publish import check_outputs
from ..scorer import Scorer
from .dataset_options import dataset_run, parquet_option
from .options import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_TERMINATED,
    Scoring,
    Terminated,
    exits_on_errors,
    fail,
    require_stdout,
    scoring_options,
)
from .sources import unique_files


def _shard(ctx, param, value):
    if value is None:
        return None
    try:
        return parse_shard(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc).split(": ", 1)[-1]) from None


@click.command("score")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, file_okay=True, dir_okay=True))
@scoring_options
@click.option("--table", "fmt", flag_value="table", help="Readable table (the default on stdout).")
@click.option("--json", "fmt", flag_value="json", help="One JSON array of records.")
@click.option("--jsonl", "fmt", flag_value="jsonl", help="One JSON record per line.")
@click.option("--csv", "fmt", flag_value="csv", help="CSV with a header row.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write to FILE (atomically, when the run succeeds) instead of stdout; its extension (.json, .jsonl, .csv, .parquet) picks the format unless a format flag is given.",
)
@click.option("--recursive/--no-recursive", default=True, show_default=True, help="Descend into subfolders.")
@click.option("--hidden", is_flag=True, help="Include hidden files and folders (names starting with '.').")
@click.option(
    "--shard", callback=_shard, default=None, metavar="I/N", help="Score only shard I of N (0 <= I < N), stable by path below each folder."
)
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_PIXELS,
    show_default=True,
    help="Refuse images with more pixels (decompression-bomb guard).",
)
@click.option(
    "--decode-memory",
    type=click.IntRange(min=64),
    default=DEFAULT_DECODE_MEMORY >> 20,
    show_default=True,
    metavar="MB",
    help="Memory that image decoding may hold at once; bigger images wait their turn, an image that alone needs more is refused.",
)
@parquet_option
@exits_on_errors
def command(paths, scoring: Scoring, fmt, output, recursive, hidden, shard, max_pixels, decode_memory, parquet_path):
    """Score images (files or folders, recursively) for iaa, iqa and ista (0-100)."""
    if output is None and parquet_path is None:
        require_stdout()  # with --parquet the records are kept; a closed stdout just drops the table
    check_outputs({"-o": output, "--parquet": parquet_path}, {"": paths, "--cache": scoring.cache_path})
    package = load_model(scoring.model)
    batch_size = _bounded_batch_size(scoring.batch_size, package, decode_memory << 20)
    options = scoring.score_options(batch_size=batch_size, max_pixels=max_pixels, decode_memory=decode_memory << 20)
    scorer = Scorer(package, options)
    discovery_failures: list[str] = []

    def on_folder_error(path: str, reason: str) -> None:
        discovery_failures.append(path)
        click.echo(f"perceptlite: cannot read folder {display_name(path)}: {reason}", err=True)

    files = unique_files(iter_image_files(paths, recursive=recursive, hidden=hidden, shard=shard, on_error=on_folder_error))
    dataset = dataset_run(scorer, scoring.cache_path, parquet_path, scoring.quiet)  # closed with the click context
    results = dataset.tee(scorer.score_many(files))
    try:
        with _progress(scoring.quiet) as progress:
            scored, failed = _write_all(results, fmt, output, progress, scorer, bool(discovery_failures), dataset.publish)
    except NoImagesFound:
        dataset.abandon()  # a run that found nothing publishes nothing: earlier outputs stay as they were
        raise
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        click.echo(f"perceptlite: {what}" + (f"; {display_name(output)} left unchanged" if output else ""), err=True)
        sys.exit(EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED)
    except OSError as exc:
        if isinstance(exc, BrokenPipeError) and output is None:
            raise  # `perceptlite score . | head`: the command group ends quietly (141)
        target = display_name(output) if output else "stdout"
        fail(f"cannot write {target}: {exc.strerror or exc}")
    if not scoring.quiet:
        _summary(scored, failed, output)
    sys.exit(EXIT_SOME_FAILED if failed or discovery_failures else EXIT_OK)


class NoImagesFound(PerceptliteError):
    """The run found no image files: an error (exit 2), and no output is published."""


# Memory one image costs during inference, as a multiple of its input tensors (every view: the whole
# image and each crop run through the network; activations of a small convnet on CPU).
ACTIVATION_FACTOR = 24


def _bounded_batch_size(batch_size: int | None, package: ModelPackage, budget: int) -> int | None:
    """--batch-size, lowered (with a note) when its inputs and activations would exceed the memory budget."""
    if batch_size is None:
        return None
    per_image = input_bytes(package.input) * ACTIVATION_FACTOR
    largest = max(1, budget // per_image)
    if batch_size > largest:
        click.echo(
            f"perceptlite: --batch-size {batch_size} would need about {batch_size * per_image / 1e9:.1f} GB; "
            f"using {largest} (the memory budget, --decode-memory, is {budget >> 20} MB)",
            err=True,
        )
        return largest
    return batch_size


def _write_all(
    results: Iterable[ScoreResult],
    fmt: str | None,
    output: str | None,
    progress,
    scorer: Scorer,
    found_elsewhere: bool,
    publish_first: Callable[[], None],
) -> tuple[int, int]:
    """Write every result; (scored, failed). No result (and no unreadable folder, `found_elsewhere`)
    raises NoImagesFound: inside the writer for a file, so that it is not published; after it for
    stdout, which gets a complete (empty) document. `publish_first` puts the other outputs in place
    just before this one, so that a failure there leaves -o unpublished too."""
    scored = failed = 0
    with write(output, fmt, model=scorer.package.name, model_hash=scorer.model_key) as writer:
        for result in results:
            writer.write(result)
            if result.error:
                failed += 1
            else:
                scored += 1
            progress.update(1)
        nothing = scored == failed == 0 and not found_elsewhere
        if nothing and output is not None:
            raise NoImagesFound("no image files found")
        if not nothing:
            publish_first()
    if nothing:
        raise NoImagesFound("no image files found")  # an empty folder is not success
    return scored, failed


@contextlib.contextmanager
def _progress(quiet: bool) -> Iterator:
    """A tqdm bar on stderr when stderr is a terminal; a no-op otherwise."""
    if quiet or not sys.stderr.isatty():
        yield _NoProgress()
        return
    from tqdm import tqdm

    with tqdm(unit="img", file=sys.stderr, dynamic_ncols=True, leave=False) as bar:
        yield bar


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass


def _summary(scored: int, failed: int, output: str | None) -> None:
    where = f" -> {display_name(output)}" if output else ""
    tail = f", {failed} failed (see their 'error')" if failed else ""
    if output or failed or sys.stderr.isatty():
        click.echo(f"perceptlite: {scored} scored{tail}{where}", err=True)
