"""`python -m export.base`: the recipe of the bundled package, one resumable step at a time."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from .iqa_training import RatedPhoto, TrainingConfig, TrainingError, UnratedPhoto
from .photos import PhotoSetError, corpus_damage_photos, professional_training_photos, rated_photos

work_option = click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=Path("artifacts/base"), show_default=True,
                           help="Work folder: every step's outputs and checkpoints (resumable).")
smoke_option = click.option("--smoke", is_flag=True, help="A few photos and one short epoch: the whole step in minutes, for tests.")


def _photo_sets(smoke: bool) -> tuple[list[RatedPhoto], list[UnratedPhoto]]:
    rated = [RatedPhoto(path, mos) for path, mos in rated_photos()]
    unrated = [UnratedPhoto(p, True) for p in professional_training_photos()] + [UnratedPhoto(p, False) for p in corpus_damage_photos()]
    if smoke:
        return rated[:40], unrated[:2] + unrated[-4:]
    return rated, unrated


def _config(smoke: bool) -> TrainingConfig:
    return TrainingConfig(epochs=1, probe_steps=50) if smoke else TrainingConfig()


@click.group()
def main() -> None:
    """Build the bundled perceptlite-base package (see export/README.md)."""


@main.command("iqa-cv")
@work_option
@smoke_option
def iqa_cv(work: Path, smoke: bool) -> None:
    """Cross-validate the iqa training recipe over every rated dev photo (WORK/iqa-cv/summary.json)."""
    from .crossval import cross_validate

    started = time.time()
    try:
        rated, unrated = _photo_sets(smoke)
        summary = cross_validate(rated, unrated, _config(smoke), work / "iqa-cv", log=lambda m: click.echo(m, err=True))
    except (PhotoSetError, TrainingError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps({k: summary[k] for k in ("pooled", "mean_of_folds")}, indent=2))
    click.echo(f"iqa-cv: {time.time() - started:.0f} s", err=True)
