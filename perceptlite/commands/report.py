"""`perceptlite report`: a self-contained HTML page of the scores of a folder, to open in a browser."""

from __future__ import annotations

import click

from ..errors import PerceptliteError
from ..manifest import ModelPackageError
from ..names import display_name, escape_unsafe
from ..report import write_report
from ._sources import gather_results, score_source_options


@click.command("report")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The HTML file to write, e.g. report.html.")
@click.option("--title", default="perceptlite report", show_default=True, help="Page title.")
@score_source_options
def command(paths, output, title, from_scores, cache_path, model, device) -> None:
    """Write an HTML report for PATHS (or --from-scores): thumbnails, sorting, histograms, best/worst, failures."""
    try:
        results = gather_results(paths, from_scores, cache_path, model, device)
        write_report(results, output, title)
    except (PerceptliteError, ModelPackageError) as exc:
        raise click.ClickException(escape_unsafe(str(exc))) from None
    except OSError as exc:
        raise click.ClickException(escape_unsafe(f"{output}: cannot write the report ({exc.strerror or exc})")) from None
    failed = sum(1 for result in results if result.error is not None)
    click.echo(f"wrote {display_name(output)}: {len(results) - failed} images, {failed} failed", err=True)
