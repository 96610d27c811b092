"""`perceptlite report`: a self-contained HTML page of the scores of a folder, to open in a browser.

Exit codes: 0 written, 1 written but some files failed (listed on the page), 2 usage, model or input errors
(nothing is written; an existing page is left as it was).
"""

from __future__ import annotations

import re
import sys

import click

from ..datasets.report import write_report
from ..records.names import display_name, escape_unsafe, readable_text
from ..records.publish import check_outputs
from .map import report_maps
from .options import EXIT_OK, EXIT_SOME_FAILED, Scoring, exits_on_errors, fail, scoring_options
from .sources import from_scores_option, gather_results

_LINE_BREAKS = re.compile(r"[\t\n\r\v\f]+")


def page_title(title: str) -> str:
    """--title as page text: bytes that are not UTF-8 become U+FFFD, tabs and line breaks a space,
    and other control characters (and bidirectional overrides) a visible \\uXXXX escape."""
    return escape_unsafe(_LINE_BREAKS.sub(" ", readable_text(title)))


@click.command("report")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The HTML file to write, e.g. report.html.")
@click.option("--title", default="perceptlite report", show_default=True, help="Page title (control characters are shown escaped).")
@click.option("--maps", "with_maps", is_flag=True, help="Add each image's quality map (iqa per cell), shown by a button on its card.")
@from_scores_option
@scoring_options
@exits_on_errors
def command(paths, output, title, with_maps, from_scores, scoring: Scoring) -> None:
    """Write an HTML report for PATHS (or --from-scores): thumbnails, sorting, histograms, best/worst, failures."""
    check_outputs({"-o": output}, {"": paths, "--from-scores": from_scores, "--cache": scoring.cache_path})
    results = gather_results(paths, from_scores, scoring)
    maps = report_maps(results, scoring) if with_maps else None
    try:
        write_report(results, output, page_title(title), maps)
    except OSError as exc:
        fail(f"{output}: cannot write the report ({exc.strerror or exc})")
    failed = sum(1 for result in results if result.error is not None)
    if not scoring.quiet:
        click.echo(f"wrote {display_name(output)}: {len(results) - failed} images, {failed} failed", err=True)
    sys.exit(EXIT_SOME_FAILED if failed else EXIT_OK)
