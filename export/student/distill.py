"""The distillation factory: label -> train -> export -> quantize -> measure -> package.

    python -m export.student.distill all --corpus ../shared/corpus --work artifacts/distill --out models/perceptlite-base

Every step reads and writes a work folder (labels.jsonl, feature cache, student.pt, model.onnx,
model.int8.onnx, acceptance.json), so steps can be run, re-run or resumed one at a time.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

DEFAULT_TEACHERS = ("nima", "iqa-synthetic", "ista")
DEFAULT_VIEWS = 4

work_option = click.option(
    "--work", type=click.Path(file_okay=False, path_type=Path), default=Path("artifacts/distill"), show_default=True,
    help="Work folder holding labels, feature cache, checkpoints and exported files.",
)


def _command_line() -> str:
    return "python -m export.student.distill " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _labels(work: Path, labels: tuple[Path, ...]) -> list[Path]:
    files = list(labels) or [work / "labels.jsonl"]
    for path in files:
        if not path.is_file():
            raise click.ClickException(f"{path}: no label file; run `python -m export.student.distill label` first or pass --labels")
    return files


def _train_summary(work: Path) -> dict:
    path = work / "student.json"
    if not path.is_file():
        raise click.ClickException(f"{path}: no trained student; run `python -m export.student.distill train` first")
    return json.loads(path.read_text(encoding="utf-8"))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Distil a compact student from teacher labels and package it for perceptlite."""


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def label(ctx: click.Context) -> None:
    """Label images with teachers (all arguments go to `python -m export.student.label`)."""
    _run_label(list(ctx.args))


def _run_label(args: list[str]) -> None:
    from . import label as labeller

    status = labeller.main(args)
    if status:
        raise SystemExit(status)


@main.command()
@work_option
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), multiple=True, help="Label JSONL file(s); default WORK/labels.jsonl.")
@click.option("--size", type=int, default=None, help="Input resolution (square); default from export.student.train.")
@click.option("--epochs", type=int, default=60, show_default=True, help="Training epochs over the cached features.")
@click.option("--max-steps", type=int, default=None, help="Stop after this many optimiser steps (smoke tests).")
@click.option("--limit", type=int, default=None, help="Use only the first N training records (smoke tests).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for every random choice.")
@click.option("--finetune-from", type=int, default=None, help="First backbone block fine-tuned with the heads (0-16; 16 keeps the backbone frozen); default from export.student.train.")
@click.option("--finetune-epochs", type=int, default=None, help="Epochs of fine-tuning blocks from --finetune-from with the heads (0 trains the heads only); default from export.student.train (2).")
def train(work: Path, labels: tuple[Path, ...], size: int | None, epochs: int, max_steps: int | None, limit: int | None, seed: int, finetune_from: int | None, finetune_epochs: int | None) -> None:
    """Train the student's heads, then fine-tune its late blocks with them (held-out images excluded)."""
    from .train import DEFAULT_FINETUNE_EPOCHS, DEFAULT_FINETUNE_FROM, DEFAULT_SIZE, train as run_train

    summary = run_train(
        _labels(work, labels), work / "student.pt", size=size or DEFAULT_SIZE, epochs=epochs, seed=seed,
        cache_dir=work / "features", max_steps=max_steps, limit=limit,
        finetune_from=DEFAULT_FINETUNE_FROM if finetune_from is None else finetune_from,
        finetune_epochs=DEFAULT_FINETUNE_EPOCHS if finetune_epochs is None else finetune_epochs,
    )
    click.echo(f"trained on {summary['records']} records ({summary['sources']} images), final loss {summary['final_loss']:.5f}")


@main.command("export")
@work_option
def export_cmd(work: Path) -> None:
    """Export WORK/student.pt to WORK/model.onnx and check it against torch."""
    from .onnx_export import MAX_ABS_DIFF, export_onnx, max_abs_difference
    from .label import read_records
    from .train import load_student, preprocess, record_image

    summary = _train_summary(work)
    size = summary["size"]
    student = load_student(work / "student.pt")
    path = export_onnx(student, work / "model.onnx", size)
    records = read_records(summary["label_files"])
    records = records[:: max(1, len(records) // 8)][:8]
    diff = max_abs_difference(student, path, [preprocess(record_image(r), size) for r in records])
    (work / "export.json").write_text(json.dumps({"size": size, "onnx_vs_torch_max_abs": diff}, indent=2) + "\n")
    click.echo(f"{path}: max |torch - onnx| = {diff:.5f} on {len(records)} images")
    if diff > MAX_ABS_DIFF:
        raise click.ClickException(f"{path}: ONNX differs from torch by {diff:.3f} > {MAX_ABS_DIFF}; do not ship it")


@main.command()
@work_option
@click.option("--calibration-images", type=int, default=64, show_default=True, help="Training images used to calibrate activation ranges.")
def quantize(work: Path, calibration_images: int) -> None:
    """Write WORK/model.int8.onnx: static QDQ int8, calibrated on training images."""
    from .label import read_records
    from .quantize import quantize_int8
    from .splits import is_heldout
    from .train import preprocess, record_image

    summary = _train_summary(work)
    records = [r for r in read_records(summary["label_files"]) if not is_heldout(r["source"])]
    step = max(1, len(records) // calibration_images)
    chosen = records[::step][:calibration_images]
    calibration = [preprocess(record_image(r), summary["size"]) for r in chosen]
    path = quantize_int8(work / "model.onnx", work / "model.int8.onnx", calibration)
    click.echo(f"{path}: calibrated on {len(calibration)} training images")


@main.command()
@work_option
@click.option("--ladder-images", type=int, default=12, show_default=True, help="Held-out reference images per distortion ladder.")
@click.option("--limit", type=int, default=None, help="Measure on only the first N held-out records.")
def measure(work: Path, ladder_images: int, limit: int | None) -> None:
    """Measure every acceptance number on held-out images; writes WORK/acceptance.json."""
    from .acceptance import format_report, measure as run_measure

    summary = _train_summary(work)
    result = run_measure(
        summary["label_files"], work / "model.onnx", work / "model.int8.onnx", summary["size"],
        ladder_images=ladder_images, record_limit=limit, log=lambda m: click.echo(m, err=True),
    )
    export_info = _read(work / "export.json")
    if "onnx_vs_torch_max_abs" in export_info:
        result["onnx_vs_torch_max_abs"] = export_info["onnx_vs_torch_max_abs"]
    (work / "acceptance.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    click.echo(format_report(result))


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


@main.command()
@work_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Package folder to write (e.g. models/perceptlite-base).")
@click.option("--teacher", "teachers", multiple=True, default=DEFAULT_TEACHERS, show_default=True, help="Teachers named in the provenance.")
@click.option("--name", default="perceptlite-base", show_default=True, help="Package name.")
@click.option("--version", "version", default="0.1.0", show_default=True, help="Package version.")
@click.option("--command", "command", default=None, help="The command line to record as provenance (default: this one).")
def package(work: Path, out: Path, teachers: tuple[str, ...], name: str, version: str, command: str | None) -> None:
    """Write the model package (ONNX files, manifest with hashes and fidelity, MODEL_CARD.md)."""
    from .package import write_student_package

    path = write_student_package(
        work, out, _read(work / "acceptance.json"), _train_summary(work), _read(work / "export.json"),
        list(teachers), command or _command_line(), name=name, version=version,
    )
    click.echo(f"{path}: package written")


@main.command("all")
@click.option("--corpus", type=click.Path(exists=True, file_okay=False, path_type=Path), multiple=True, required=True, help="Image folder(s) to label (searched recursively).")
@work_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Package folder to write.")
@click.option("--teacher", "teachers", multiple=True, default=DEFAULT_TEACHERS, show_default=True, help="Teachers to label with.")
@click.option("--views-per-image", type=int, default=DEFAULT_VIEWS, show_default=True, help="Clean crops per image labelled besides the clean image and its 4 distorted copies.")
@click.option("--size", type=int, default=None, help="Input resolution (square).")
@click.option("--epochs", type=int, default=60, show_default=True, help="Training epochs over the cached features.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for every random choice.")
@click.option("--finetune-from", type=int, default=None, help="First backbone block fine-tuned with the heads (16 keeps it frozen).")
@click.option("--finetune-epochs", type=int, default=None, help="Epochs of fine-tuning blocks from --finetune-from with the heads (0: heads only); default 2.")
@click.option("--ladder-images", type=int, default=12, show_default=True, help="Held-out reference images per ladder.")
@click.pass_context
def all_steps(ctx: click.Context, corpus: tuple[Path, ...], work: Path, out: Path, teachers: tuple[str, ...], views_per_image: int, size: int | None, epochs: int, seed: int, finetune_from: int | None, finetune_epochs: int | None, ladder_images: int) -> None:
    """Run every step: label the corpus, train, export, quantize, measure, package."""
    command = _command_line()
    work.mkdir(parents=True, exist_ok=True)
    label_args = ["--images", *map(str, corpus)]
    for name in teachers:
        label_args += ["--teacher", name]
    _run_label(label_args + ["--out", str(work / "labels.jsonl"), "--seed", str(seed), "--views-per-image", str(views_per_image)])
    ctx.invoke(
        train, work=work, labels=(), size=size, epochs=epochs, max_steps=None, limit=None, seed=seed,
        finetune_from=finetune_from, finetune_epochs=finetune_epochs,
    )
    ctx.invoke(export_cmd, work=work)
    ctx.invoke(quantize, work=work, calibration_images=64)
    ctx.invoke(measure, work=work, ladder_images=ladder_images, limit=None)
    ctx.invoke(package, work=work, out=out, teachers=teachers, name="perceptlite-base", version="0.1.0", command=command)


if __name__ == "__main__":
    main()
