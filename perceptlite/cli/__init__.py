"""The `perceptlite` command line. Each sub-command lives in its own module in this folder;
the options, exit codes and error handling they share are in `options.py`."""

from __future__ import annotations

import warnings

import click

from . import ask, eval, filter, map, merge, models, report, score
from .options import CommandGroup


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="perceptlite")
def main() -> None:
    """Score images for aesthetics (iaa), technical quality (iqa) and structure & texture (ista).

    Exit codes of every command: 0 all done, 1 some files failed (their records say why),
    2 usage, model or input errors (including no image files found), 130 interrupted (Ctrl-C),
    143 terminated (SIGTERM), 141 stdout closed.
    """
    silence_library_warnings()


# Image libraries warn (decompression bomb, truncated TIFF, corrupt EXIF) from these modules; what
# matters reaches the record's `error`, the rest is noise on stderr.
_WARNING_MODULES = r"(PIL|pillow_heif|pillow_avif|perceptlite)(\.|$)"


def silence_library_warnings() -> None:
    """Keep image-library warnings off stderr for the whole command."""
    warnings.filterwarnings("ignore", module=_WARNING_MODULES)


main.add_command(score.command)
main.add_command(models.command)
main.add_command(ask.command)
main.add_command(filter.command)
main.add_command(merge.command)
main.add_command(report.command)
main.add_command(eval.command)
main.add_command(map.command)
