"""The one CLI convention: shared options, the exit codes and the error handler of every command.

Exit codes (every command):

- 0: all done (every image scored);
- 1: some files failed (their records carry an ``error``); the rest was done;
- 2: usage, model or input errors: a bad option, a path or model that cannot be found or loaded,
  an unavailable ``--device``, an output that cannot be written, no image files found;
- 130 / 143: interrupted by Ctrl-C / terminated (SIGTERM); 141: stdout closed (``| head``).
"""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from ..backends.base import DEVICES
from ..errors import PerceptliteError
from ..package.registry import DEFAULT_MODEL
from ..records.names import escape_unsafe

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE, EXIT_TERMINATED = 130, 141, 143

F = TypeVar("F", bound=Callable[..., Any])


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


def model_options(required: bool = False, help: str | None = None) -> Callable[[F], F]:
    """-m/--model, --variant, --device and --threads: how a command opens its Scorer."""
    return _options(model_option(required, help), variant_option, device_option, threads_option)
