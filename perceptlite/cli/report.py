"""`perceptlite report`: a self-contained HTML page of the scores of a folder, to open in a browser.

Exit codes: 0 written, 1 written but some files failed (listed on the page), 2 usage, model or input errors.
"""

from __future__ import annotations

import sys

import click

from ..datasets.report import write_report
from ..records.names import display_name
from .map import report_maps
from .options import EXIT_OK, EXIT_SOME_FAILED, exits_on_errors, fail
from .sources import gather_results, score_source_options


@click.command("report")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The HTML file to write, e.g. report.html.")
@click.option("--title", default="perceptlite report", show_default=True, help="Page title.")
@click.option("--maps", "with_maps", is_flag=True, help="Add each image's quality map (iqa per cell), shown by a button on its card.")
@score_source_options
@exits_on_errors
def command(paths, output, title, with_maps, from_scores, cache_path, model, device) -> None:
    """Write an HTML report for PATHS (or --from-scores): thumbnails, sorting, histograms, best/worst, failures."""
    results = gather_results(paths, from_scores, cache_path, model, device)
    maps = report_maps(results, model, device) if with_maps else None
    try:
        write_report(results, output, title, maps)
    except OSError as exc:
        fail(f"{output}: cannot write the report ({exc.strerror or exc})")
    failed = sum(1 for result in results if result.error is not None)
    click.echo(f"wrote {display_name(output)}: {len(results) - failed} images, {failed} failed", err=True)
    sys.exit(EXIT_SOME_FAILED if failed else EXIT_OK)
