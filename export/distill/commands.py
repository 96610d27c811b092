"""The distillation: teachers label the corpus, then a compact student learns their scores.

    python -m export.distill all --corpus ../shared/corpus --work artifacts/distill

The student (WORK/student.pt) and its labels (WORK/labels.jsonl) are what the whole-view
factory starts from. Every step reads and writes the work folder, so steps can be re-run or resumed.
"""

from __future__ import annotations

from pathlib import Path

import click

from export.common.errors import FactoryGroup

from .config import DEFAULT_WORK, WORK_FILES

DEFAULT_TEACHERS = ("nima", "iqa-synthetic", "ista")
DEFAULT_VIEWS = 4

work_option = click.option(
    "--work",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_WORK,
    show_default=True,
    help="Work folder holding labels, feature cache, checkpoints and exported files.",
)


def _labels(work: Path, labels: tuple[Path, ...]) -> list[Path]:
    files = list(labels) or [work / WORK_FILES["labels"]]
    for path in files:
        if not path.is_file():
            raise click.ClickException(f"{path}: no label file; run `python -m export.distill label` first or pass --labels")
    return files


@click.group(cls=FactoryGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Distil a compact student from teacher labels (the whole-view factory's starting point)."""


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def label(ctx: click.Context) -> None:
    """Label images with teachers (all arguments go to `python -m export.distill.label_command`)."""
    _run_label(list(ctx.args))


def _run_label(args: list[str]) -> None:
    from .label_command import main as label_main

    status = label_main(args)
    if status:
        raise click.exceptions.Exit(status)


@main.command()
@work_option
@click.option(
    "--labels",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    multiple=True,
    help="Label JSONL file(s); default WORK/labels.jsonl.",
)
@click.option("--size", type=int, default=None, help="Input resolution (square); default from export.distill.train.")
@click.option("--epochs", type=int, default=60, show_default=True, help="Training epochs over the cached features.")
@click.option("--max-steps", type=int, default=None, help="Stop after this many optimiser steps (smoke tests).")
@click.option("--limit", type=int, default=None, help="Use only the first N training records (smoke tests).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for every random choice.")
@click.option(
    "--finetune-from",
    type=int,
    default=None,
    help="First backbone block fine-tuned with the heads (0-16; 16 keeps the backbone frozen); default from export.distill.train.",
)
@click.option(
    "--finetune-epochs",
    type=int,
    default=None,
    help="Epochs of fine-tuning blocks from --finetune-from with the heads (0 trains the heads only); default from export.distill.train (2).",
)
def train(
    work: Path,
    labels: tuple[Path, ...],
    size: int | None,
    epochs: int,
    max_steps: int | None,
    limit: int | None,
    seed: int,
    finetune_from: int | None,
    finetune_epochs: int | None,
) -> None:
    """Train the student's heads, then fine-tune its late blocks with them (held-out images excluded)."""
    from .train import DEFAULT_FINETUNE_EPOCHS, DEFAULT_FINETUNE_FROM, DEFAULT_SIZE
    from .train import train as run_train

    summary = run_train(
        _labels(work, labels),
        work / WORK_FILES["student"],
        size=size or DEFAULT_SIZE,
        epochs=epochs,
        seed=seed,
        cache_dir=work / WORK_FILES["features"],
        max_steps=max_steps,
        limit=limit,
        finetune_from=DEFAULT_FINETUNE_FROM if finetune_from is None else finetune_from,
        finetune_epochs=DEFAULT_FINETUNE_EPOCHS if finetune_epochs is None else finetune_epochs,
    )
    click.echo(f"trained on {summary['records']} records ({summary['sources']} images), final loss {summary['final_loss']:.5f}")


@main.command("all")
@click.option(
    "--corpus",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    multiple=True,
    required=True,
    help="Image folder(s) to label (searched recursively).",
)
@work_option
@click.option("--teacher", "teachers", multiple=True, default=DEFAULT_TEACHERS, show_default=True, help="Teachers to label with.")
@click.option(
    "--views-per-image",
    type=int,
    default=DEFAULT_VIEWS,
    show_default=True,
    help="Clean crops per image labelled besides the clean image and its 4 distorted copies.",
)
@click.option("--size", type=int, default=None, help="Input resolution (square).")
@click.option("--epochs", type=int, default=60, show_default=True, help="Training epochs over the cached features.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for every random choice.")
@click.option("--finetune-from", type=int, default=None, help="First backbone block fine-tuned with the heads (16 keeps it frozen).")
@click.option(
    "--finetune-epochs",
    type=int,
    default=None,
    help="Epochs of fine-tuning blocks from --finetune-from with the heads (0: heads only); default 2.",
)
@click.pass_context
def all_steps(
    ctx: click.Context,
    corpus: tuple[Path, ...],
    work: Path,
    teachers: tuple[str, ...],
    views_per_image: int,
    size: int | None,
    epochs: int,
    seed: int,
    finetune_from: int | None,
    finetune_epochs: int | None,
) -> None:
    """Run every step: label the corpus, then train the student."""
    work.mkdir(parents=True, exist_ok=True)
    label_args = ["--images", *map(str, corpus)]
    for name in teachers:
        label_args += ["--teacher", name]
    _run_label(label_args + ["--out", str(work / WORK_FILES["labels"]), "--seed", str(seed), "--views-per-image", str(views_per_image)])
    ctx.invoke(
        train,
        work=work,
        labels=(),
        size=size,
        epochs=epochs,
        max_steps=None,
        limit=None,
        seed=seed,
        finetune_from=finetune_from,
        finetune_epochs=finetune_epochs,
    )


if __name__ == "__main__":
    main()
