"""`perceptlite eval VR.json --images DIR`: SRCC / KRCC / PLCC of a model against a Visual Rating file
(see perceptlite/evaluation.py for the format)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..errors import PerceptliteError
from ..evaluation import evaluate, format_table, scorer_scores
from ..manifest import ModelPackageError
from ..records import AXES

EXIT_OK, EXIT_USAGE = 0, 2


@click.command("eval")
@click.argument("vr_files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--images", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="Folder the VR files' image paths are relative to.")
@click.option("-m", "--model", default=None, metavar="NAME|FOLDER", help="Model package: a bundled name or a folder [default: the bundled default].")
@click.option("--axis", "axes", type=click.Choice(AXES + ("all",)), multiple=True, default=("all",), show_default=True, help="Axis to correlate with gt_score (repeat; 'all' = iaa, iqa and ista).")
@click.option("--variant", default=None, help="Weight variant of the package, e.g. fp32 or int8 [default: the package's].")
@click.option("--device", type=click.Choice(("auto", "cpu", "cuda")), default="auto", show_default=True, help="Where to run the model.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Inference threads [default: all cores].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Images per inference batch [default: the backend's].")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON instead of a table.")
def command(vr_files, images, model, axes, variant, device, threads, batch_size, as_json):
    """Correlate a model's scores with the ground truth of Visual Rating files (SRCC, KRCC, PLCC)."""
    axes = AXES if "all" in axes else tuple(dict.fromkeys(axes))
    try:
        from ..scorer import Scorer, ScoreOptions

        scorer = Scorer(model, ScoreOptions(device=device, threads=threads, variant=variant, batch_size=batch_size))
        rows = evaluate(vr_files, images, axes, scorer_scores(scorer))
    except (PerceptliteError, ModelPackageError) as exc:
        click.echo(f"perceptlite: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    if as_json:
        click.echo(json.dumps([row.as_dict() for row in rows], indent=2))
    else:
        click.echo(format_table(rows, f"model: {scorer.package.name} {scorer.package.version} ({scorer.package.backend})"))
    sys.exit(EXIT_OK)
