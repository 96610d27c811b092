"""`perceptlite score PATH...`: score image files and folders, write a table, JSON, JSONL, CSV or Parquet.

Exit codes: 0 every file scored, 1 some files could not be scored (their records carry `error`),
2 usage, model or input errors (bad options, missing paths, a model that cannot be found or
loaded, no image files found).
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Iterable, Iterator

import click

from ..backends.preprocess import input_bytes
from ..images.decode import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS
from ..images.discover import iter_image_files, parse_shard
from ..images.memory import DEFAULT_DECODE_MEMORY
from ..package.manifest import ModelPackage
from ..package.registry import load_model
from ..records import ScoreResult
from ..records.files import write
from ..records.names import display_name
from ..scorer import ScoreOptions, Scorer
from .dataset_options import dataset_options, dataset_run
from .options import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_TERMINATED,
    Terminated,
    batch_size_option,
    exits_on_errors,
    fail,
    install_sigterm_handler,
    model_options,
)


def _shard(ctx, param, value):
    if value is None:
        return None
    try:
        return parse_shard(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc).split(": ", 1)[-1]) from None


@click.command("score")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, file_okay=True, dir_okay=True))
@model_options()
@click.option("--table", "fmt", flag_value="table", help="Readable table (the default on stdout).")
@click.option("--json", "fmt", flag_value="json", help="One JSON array of records.")
@click.option("--jsonl", "fmt", flag_value="jsonl", help="One JSON record per line.")
@click.option("--csv", "fmt", flag_value="csv", help="CSV with a header row.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write to FILE (atomically, when the run finishes) instead of stdout; its extension (.json, .jsonl, .csv, .parquet) picks the format unless a format flag is given.",
)
@batch_size_option
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None, help="Decode worker threads [default: one per core, at least 2].")
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
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary on stderr.")
@dataset_options
@exits_on_errors
def command(
    paths,
    model,
    variant,
    device,
    threads,
    fmt,
    output,
    batch_size,
    jobs,
    recursive,
    hidden,
    shard,
    max_pixels,
    decode_memory,
    quiet,
    cache_path,
    parquet_path,
):
    """Score images (files or folders, recursively) for iaa, iqa and ista (0-100)."""
    install_sigterm_handler()
    _refuse_inputs_as_outputs(paths, {"-o": output, "--parquet": parquet_path})
    package = load_model(model)
    batch_size = _bounded_batch_size(batch_size, package, decode_memory << 20)
    options = ScoreOptions(
        device=device,
        threads=threads,
        variant=variant,
        jobs=jobs,
        batch_size=batch_size,
        max_pixels=max_pixels,
        decode_memory=decode_memory << 20,
        cache=cache_path,
    )
    scorer = Scorer(package, options)
    discovery_failures: list[str] = []

    def on_folder_error(path: str, reason: str) -> None:
        discovery_failures.append(path)
        click.echo(f"perceptlite: cannot read folder {display_name(path)}: {reason}", err=True)

    files = iter_image_files(paths, recursive=recursive, hidden=hidden, shard=shard, on_error=on_folder_error)
    dataset = dataset_run(scorer, cache_path, parquet_path, quiet)  # --cache, --parquet; closed with the click context
    results = dataset.tee(scorer.score_many(files))
    try:
        with _progress(quiet) as progress:
            scored, failed = _write_all(results, fmt, output, progress, scorer)
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        click.echo(f"perceptlite: {what}" + (f"; {display_name(output)} left unchanged" if output else ""), err=True)
        sys.exit(EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED)
    except BrokenPipeError:  # e.g. `perceptlite score . | head`: stop quietly like other Unix tools
        _silence_stdout()
        sys.exit(EXIT_BROKEN_PIPE)
    except OSError as exc:
        target = display_name(output) if output else "stdout"
        fail(f"cannot write {target}: {exc.strerror or exc}")
    if scored == 0 and failed == 0 and not discovery_failures:
        fail("no image files found")  # an empty folder is not success
    if not quiet:
        _summary(scored, failed, output)
    sys.exit(EXIT_SOME_FAILED if failed or discovery_failures else EXIT_OK)


def _refuse_inputs_as_outputs(paths, outputs: dict[str, str | None]) -> None:
    """Exit 2 before any work when an output file is one of the images this run reads."""
    for option, output in outputs.items():
        clash = _input_named(output, paths) if output is not None else None
        if output is not None and clash is not None:
            fail(f"{option} {display_name(output)} is an input of this run ({display_name(clash)}); refusing to overwrite it")


def _input_named(output: str, paths) -> str | None:
    """The input PATH that `output` is (a given file) or would be found in (an image under a folder)."""
    try:
        info = os.stat(output)
    except OSError:
        return None  # a new file is no input
    if not stat.S_ISREG(info.st_mode):
        return None  # FIFOs and devices are written through, never replaced
    real = os.path.realpath(output)
    for path in paths:
        if os.path.isdir(path):
            inside = real.startswith(os.path.realpath(path).rstrip(os.sep) + os.sep)
            if inside and real.lower().endswith(IMAGE_EXTENSIONS):
                return path
        elif os.path.exists(path) and os.path.samefile(path, output):
            return path
    return None


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


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _write_all(results: Iterable[ScoreResult], fmt: str | None, output: str | None, progress, scorer: Scorer) -> tuple[int, int]:
    scored = failed = 0
    with write(output, fmt, model=scorer.package.name, model_hash=scorer.model_key) as writer:
        for result in results:
            writer.write(result)
            if result.error:
                failed += 1
            else:
                scored += 1
            progress.update(1)
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
