"""The `perceptlite` command line. Each sub-command lives in its own module under `commands/`."""

from __future__ import annotations

import importlib
import warnings

import click

# Module names under perceptlite/commands/, each defining `command` (a click.Command or Group).
COMMAND_MODULES = ("score", "models", "ask", "filter", "merge", "report", "eval")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="perceptlite")
def main() -> None:
    """Score images for aesthetics (iaa), technical quality (iqa) and structure & texture (ista)."""
    silence_library_warnings()
    terminate_like_interrupt()


# Image libraries warn (decompression bomb, truncated TIFF, corrupt EXIF) from these modules; what
# matters reaches the record's `error`, the rest is noise on stderr.
_WARNING_MODULES = r"(PIL|pillow_heif|pillow_avif|perceptlite)(\.|$)"


def silence_library_warnings() -> None:
    """Keep image-library warnings off stderr for the whole command."""
    warnings.filterwarnings("ignore", module=_WARNING_MODULES)


def terminate_like_interrupt() -> None:
    """SIGTERM unwinds every command like Ctrl-C (temporary files removed, outputs left as they were)."""
    from .commands.score import install_sigterm_handler

    install_sigterm_handler()


for _name in COMMAND_MODULES:
    main.add_command(importlib.import_module(f"perceptlite.commands.{_name}").command)
