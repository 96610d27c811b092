"""`perceptlite eval VR.json --images DIR`: SRCC / KRCC / PLCC of a model against a Visual Rating file
(see perceptlite/datasets/evaluation.py for the format).

Exit codes: 0 every image scored, 1 some images missing or unreadable (counted in the table),
2 usage, model or input errors (an unreadable VR file).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..datasets.evaluation import evaluate, format_table, scorer_scores
from ..records import AXES
from ..records.names import escape_unsafe
from ..scorer import Scorer
from .options import EXIT_OK, EXIT_SOME_FAILED, Scoring, exits_on_errors, scoring_options


def terminal_safe(text: str) -> str:
    """Lines of `text` with every control character, undecodable byte and bidirectional override
    (from VR file names and values) shown as a \\uXXXX escape, so none reaches the terminal."""
    return "\n".join(escape_unsafe(line) for line in text.split("\n"))


@click.command("eval")
@click.argument("vr_files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--images",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder the VR files' image paths are relative to.",
)
@scoring_options
@click.option(
    "--axis",
    "axes",
    type=click.Choice(AXES + ("all",)),
    multiple=True,
    default=("all",),
    show_default=True,
    help="Axis to correlate with gt_score (repeat; 'all' = iaa, iqa and ista).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON instead of a table.")
@exits_on_errors
def command(vr_files, images, scoring: Scoring, axes, as_json):
    """Correlate a model's scores with the ground truth of Visual Rating files (SRCC, KRCC, PLCC)."""
    axes = AXES if "all" in axes else tuple(dict.fromkeys(axes))
    scorer = Scorer(scoring.model, scoring.score_options())
    rows = evaluate(vr_files, images, axes, scorer_scores(scorer))
    if as_json:
        click.echo(json.dumps([row.as_dict() for row in rows], indent=2))  # ASCII: every control character escaped
    else:
        table = format_table(rows, f"model: {scorer.package.name} {scorer.package.version} ({scorer.package.backend})")
        click.echo(terminal_safe(table))
    sys.exit(EXIT_SOME_FAILED if any(row.failed for row in rows) else EXIT_OK)
