"""The one CLI convention: shared options, the exit codes and the error handler of every command.

Exit codes (every command):

- 0: all done (every image scored);
- 1: some files failed (their records carry an ``error``); the rest was done;
- 2: usage, model or input errors: a bad option, a path or model that cannot be found or loaded,
  an unavailable ``--device``, an output that cannot be written, no image files found;
- 130 / 143: interrupted by Ctrl-C / terminated (SIGTERM); 141: stdout closed (``| head``).

An interruption, a closed pipe or a closed stream never shows a traceback (see :class:`CommandGroup`).
The options of every command that scores (score, filter, report, eval) are declared once, in
:func:`scoring_options`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from ..backends.devices import DEVICES
from ..errors import PerceptliteError
from ..package.registry import DEFAULT_MODEL
from ..records.names import escape_unsafe

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE, EXIT_TERMINATED = 130, 141, 143

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    from ..scorer import ScoreOptions


def fail(message: str) -> NoReturn:
    """Print one line (control characters escaped) on stderr and exit 2."""
    click.echo(f"perceptlite: {escape_unsafe(message)}", err=True)
    sys.exit(EXIT_USAGE)


def exits_on_errors(function: F) -> F:
    """The error handler: a PerceptliteError (model, package, input, score file...) becomes one line and exit 2."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except PerceptliteError as exc:
            fail(str(exc))

    return wrapper  # type: ignore[return-value]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it unwinds (and cleans up) exactly like Ctrl-C."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def install_sigterm_handler() -> None:
    """SIGTERM unwinds a command like Ctrl-C (temporary files removed, outputs left as they were)."""
    if hasattr(signal, "SIGTERM"):
        with contextlib.suppress(ValueError):  # not the main thread (e.g. a test runner): keep the default
            signal.signal(signal.SIGTERM, _raise_terminated)


class CommandGroup(click.Group):
    """The top-level command: every sub-command ends the same way, whatever stops it.

    Ctrl-C exits 130 and SIGTERM 143 with one line (not click's "Aborted!" and 1), a closed stdout
    pipe exits 141 quietly; closed standard streams (``>&-``, ``2>&-``) are replaced by /dev/null so
    that nothing traces back and no file this run opens takes their place.
    """

    def main(self, *args: Any, **kwargs: Any) -> Any:
        guard_standard_streams()
        install_sigterm_handler()
        return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            terminated = isinstance(exc, Terminated)
            with contextlib.suppress(OSError):
                click.echo(f"perceptlite: {'terminated' if terminated else 'interrupted'}", err=True)
            sys.exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)
        except BrokenPipeError:  # e.g. `perceptlite filter . --where ... | head -1`: stop quietly like other Unix tools
            silence_standard_streams()
            sys.exit(EXIT_BROKEN_PIPE)


_STANDARD_STREAMS = {0: "stdin", 1: "stdout", 2: "stderr"}
closed_at_start: set[str] = set()  # names of the standard streams that were closed when the command started


def guard_standard_streams() -> None:
    """Open /dev/null on every closed standard descriptor (0, 1, 2) and remember which were closed."""
    for fd, name in _STANDARD_STREAMS.items():
        try:
            os.fstat(fd)
        except OSError:
            devnull = os.open(os.devnull, os.O_RDWR)
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)
            closed_at_start.add(name)
            if getattr(sys, name) is None:
                setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))


def require_stdout() -> None:
    """Exit 2 before any work when the results would go to a stdout that was closed (``>&-``)."""
    if "stdout" in closed_at_start:
        fail("stdout is closed; nothing could receive the results (write them with -o FILE)")


def silence_standard_streams() -> None:
    """Point stdout and stderr at /dev/null, so that flushing them at exit cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            os.dup2(devnull, fd)
    os.close(devnull)


def _options(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(function: F) -> F:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


def model_option(required: bool = False, help: str | None = None) -> Callable[[F], F]:
    """-m/--model NAME|FOLDER."""
    text = help or f"Model package: a bundled name or a folder [default: {DEFAULT_MODEL}]."
    return click.option("-m", "--model", default=None, required=required, metavar="NAME|FOLDER", help=text)


device_option = click.option(
    "--device",
    type=click.Choice(DEVICES),
    default="auto",
    show_default=True,
    help="Where to run the model (auto: a GPU when there is one, else the CPU).",
)
variant_option = click.option(
    "--variant", default=None, help="Weight variant of the package, e.g. fp32, int8 or q8_0 [default: the package's]."
)
threads_option = click.option("--threads", type=click.IntRange(min=1), default=None, help="Inference threads [default: all cores].")
batch_size_option = click.option(
    "--batch-size", type=click.IntRange(min=1), default=None, help="Images per inference batch [default: the backend's]."
)


jobs_option = click.option(
    "-j", "--jobs", type=click.IntRange(min=1), default=None, help="Decode worker threads [default: one per core, at least 2]."
)
cache_option = click.option(
    "--cache",
    "cache_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="SQLite score cache: reuse the scores of unchanged files scored before with this model and variant; remember new ones.",
)
quiet_option = click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary lines on stderr (errors still show).")


@dataclasses.dataclass(frozen=True)
class Scoring:
    """The scoring options a command was given (see :func:`scoring_options`)."""

    model: str | None
    variant: str | None
    device: str
    threads: int | None
    jobs: int | None
    batch_size: int | None
    cache_path: str | None
    quiet: bool

    def score_options(self, **more: Any) -> ScoreOptions:
        """The Scorer's options; `more`: fields only some commands have (max_pixels, decode_memory)."""
        from ..scorer import ScoreOptions

        fields = dict(
            device=self.device,
            threads=self.threads,
            variant=self.variant,
            jobs=self.jobs,
            batch_size=self.batch_size,
            cache=self.cache_path,
        )
        return ScoreOptions(**{**fields, **more})


def scoring_options(function: F) -> F:
    """-m/--model, --variant, --device, --threads, --jobs, --batch-size, --cache and --quiet, given
    to the command as one `scoring` argument (a :class:`Scoring`)."""
    names = [field.name for field in dataclasses.fields(Scoring)]

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        scoring = Scoring(**{name: kwargs.pop(name) for name in names})
        return function(*args, scoring=scoring, **kwargs)

    declare = _options(
        model_option(), variant_option, device_option, threads_option, jobs_option, batch_size_option, cache_option, quiet_option
    )
    return declare(wrapper)  # type: ignore[return-value]


def model_options(required: bool = False, help: str | None = None) -> Callable[[F], F]:
    """-m/--model, --variant, --device and --threads: how a command opens its Scorer."""
    return _options(model_option(required, help), variant_option, device_option, threads_option)
