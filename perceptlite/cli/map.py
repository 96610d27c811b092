"""`perceptlite map PATHS -o DIR`: where in each photo the technical quality is high or low.

For each image, DIR/<stem>.map.png (the photo with each cell tinted by its iqa, its number on it,
and a legend) and DIR/<stem>.map.json ({"path", "width", "height", "iqa", "grid", "cells"}).
Exit codes: 0 every map written, 1 some files failed (one line each on stderr), 2 usage, model or
input errors (a model that reads no crops, DIR not writable, no image files found).
"""

from __future__ import annotations

import os
import sys

import click

from ..errors import PerceptliteError, one_line
from ..images.decode import DEFAULT_MAX_PIXELS, DecodeError
from ..images.discover import iter_image_files
from ..maps import QualityMap, QualityMapError, check_map_support, make_map, parse_grid
from ..maps.files import MapNames, write_map
from ..pipeline import decode_item
from ..records import ScoreResult
from ..records.names import display_name
from ..scorer import Scorer
from .options import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, EXIT_TERMINATED, Scoring, Terminated, exits_on_errors, fail, model_options


def _grid(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None or value == "auto":
        return None
    try:
        return parse_grid(value)
    except QualityMapError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("map")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, file_okay=True, dir_okay=True))
@click.option(
    "-o",
    "--output",
    "folder",
    required=True,
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="Folder for the maps (made if missing).",
)
@click.option(
    "--grid",
    callback=_grid,
    default="auto",
    show_default=True,
    metavar="ROWSxCOLS|auto",
    help="Cells of each map, e.g. 4x6; auto: cells about one model crop across (the bundled model: 224 px at the photo's working size).",
)
@click.option("--overwrite", is_flag=True, help="Replace maps that an earlier run left in DIR under the same names.")
@model_options()
@click.option("--recursive/--no-recursive", default=True, show_default=True, help="Descend into subfolders.")
@click.option("--hidden", is_flag=True, help="Include hidden files and folders (names starting with '.').")
@click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, show_default=True, help="Refuse larger images.")
@click.option("-q", "--quiet", is_flag=True, help="No line per map on stderr, only failures.")
@exits_on_errors
def command(paths, folder, grid, overwrite, model, variant, device, threads, recursive, hidden, max_pixels, quiet) -> None:
    """Write a quality map of each image (files or folders): the iqa of each cell of a grid, as PNG and JSON."""
    scorer = Scorer(model, device=device, threads=threads, variant=variant, max_pixels=max_pixels)
    check_map_support(scorer.backend)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        fail(f"{display_name(folder)}: cannot make the folder ({exc.strerror or exc})")
    files = list(iter_image_files(paths, recursive=recursive, hidden=hidden, on_error=_folder_error))
    if not files:
        fail("no image files found")
    names = MapNames(folder, overwrite)
    try:
        failed = sum(not _map_one(scorer, path, grid, names, quiet) for path in files)
    except KeyboardInterrupt as exc:
        click.echo(f"perceptlite: {'terminated' if isinstance(exc, Terminated) else 'interrupted'}", err=True)
        sys.exit(EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED)
    if not quiet or failed:
        click.echo(f"{len(files) - failed} maps written to {display_name(folder)}, {failed} failed", err=True)
    sys.exit(EXIT_SOME_FAILED if failed else EXIT_OK)


def _map_one(scorer: Scorer, path: str, grid: tuple[int, int] | None, names: MapNames, quiet: bool) -> bool:
    """Map one file; False (after one line on stderr naming it) when it cannot be mapped."""
    try:
        decoded = decode_item(path, scorer.options.max_pixels, scorer.backend.draft_size)
        quality = make_map(scorer.backend, decoded, path, grid)
    except (DecodeError, QualityMapError) as exc:
        click.echo(f"perceptlite: {display_name(path)}: {one_line(exc)}", err=True)
        return False
    except (OSError, ValueError, MemoryError) as exc:  # a damaged image that decoded but cannot be resized
        click.echo(f"perceptlite: {display_name(path)}: cannot process image ({one_line(exc)})", err=True)
        return False
    try:
        png, _ = write_map(quality, decoded.image, names)
    except OSError as exc:
        raise PerceptliteError(
            f"{display_name(names.folder)}: cannot write the map of {display_name(path)} ({exc.strerror or exc})"
        ) from None
    if not quiet:
        low = min(cell.iqa for cell in quality.cells)
        click.echo(f"{display_name(png)}: iqa {quality.iqa:.1f}, {quality.grid[0]}x{quality.grid[1]} cells, lowest {low:.1f}", err=True)
    return True


def report_maps(results: list[ScoreResult], scoring: Scoring) -> dict[str, QualityMap]:
    """For `report --maps`: the map of every scored file, by path; a file that cannot be mapped gets
    one line on stderr and no map. A model that reads no crops stops the command (exit 2)."""
    scorer = Scorer(scoring.model, device=scoring.device, threads=scoring.threads, variant=scoring.variant)
    check_map_support(scorer.backend)
    maps = {}
    for result in results:
        if result.error is not None or result.path is None:
            continue
        try:
            maps[result.path] = scorer.quality_map(result.path)
        except (DecodeError, QualityMapError, OSError, ValueError) as exc:
            click.echo(f"perceptlite: {display_name(result.path)}: no quality map ({one_line(exc)})", err=True)
    return maps


def _folder_error(path: str, reason: str) -> None:
    click.echo(f"perceptlite: cannot read folder {display_name(path)}: {reason}", err=True)
