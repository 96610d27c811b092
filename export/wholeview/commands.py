"""Turn a distilled student into a package whose `iqa` agrees with people, at any photo size.

    python -m export.wholeview all --student artifacts/distill/student.pt --labels artifacts/distill/labels.jsonl \\
        --work artifacts/quality --out models/perceptlite-base

Steps, each reading and writing WORK so that any of them can be re-run or resumed:
  features   student features of native-resolution crops: the rated dev photos (../shared/human/clive-dev)
             and distortion ladders of training photos at 500-4,000 px (one .npz per photo and size)
  teacher    (optional) a no-reference teacher (--teacher unipercept:CKPT) rates unrated photos, whose
             crop features are cached too (export/wholeview/teacher.py)
  fit        the iqa head: mean opinion scores of the dev photos' training part, plus a ranking
             term that keeps every ladder falling, plus the teacher's photos at --teacher-weight when
             `teacher` ran; 5-fold cross-validation picks the weight decay
  calibrate  the iaa blend: the student's iaa head plus a ridge on the whole view's block statistics,
             fitted to NIMA's iaa of the distillation's training label records (--labels; clean, distorted
             and cropped corpus photos; export/wholeview/aesthetics.py), and its map onto the spread
             of AVA's human mean ratings (export/wholeview/calibration.py)
  export     model.onnx (pixels + crops -> scores), checked against torch; model.int8.onnx
  package    manifest + model card, then `measure` through perceptlite.Scorer, then the final card
The dev photos whose sha256(file name) % 100 < 25 (export/common/splits.py) are never trained on.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import click

from export.common.errors import FactoryGroup

from .config import (
    CORPUS,
    DEV_LADDER_IMAGES,
    DISTILL_LABELS,
    PACKAGE_VERSION,
    RANK_WEIGHT,
    SMOOTH_KINDS,
    SMOOTH_SIZES,
    TRAIN_SIZES,
    TRAIN_WALLPAPERS,
    VARIANT_FILES,
    WORK_FILES,
    dev_photos,
    smooth_noise_photos,
    wallpaper_photo,
)
from .teacher import DEFAULT_TEACHER_WEIGHT


def _command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["python", "-m", "export.wholeview", *sys.argv[1:]])


def _log(message: str) -> None:
    click.echo(message, err=True)


@click.group(cls=FactoryGroup)
def main() -> None:
    """Build the human-calibrated package from a distilled student (see the module doc)."""


work_option = click.option(
    "--work",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("artifacts/quality"),
    show_default=True,
    help="Work folder (resumable).",
)
student_option = click.option(
    "--student",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The distilled student: export.distill's student.pt, or a student-only ONNX export.",
)


@main.command()
@work_option
@student_option
def features(work: Path, student: Path) -> None:
    """Cache crop features of the dev photos and of the training ladders."""
    from .features import cache_dev_features, cache_ladder_features, feature_session

    session = feature_session(student, work)
    started = time.time()
    cache_dev_features(session, dev_photos(), work / WORK_FILES["dev_features"])
    _log(f"dev photos: {time.time() - started:.0f} s")
    started = time.time()
    train_dev = [path for path, _, held in dev_photos() if not held][:DEV_LADDER_IMAGES]
    sources = [(f"dev/{p.name}", p, None) for p in train_dev]
    sources += [(f"wall/{name}@{size}", wallpaper_photo(name), size) for name in TRAIN_WALLPAPERS for size in TRAIN_SIZES]
    cache_ladder_features(session, sources, work / WORK_FILES["ladders"])
    _log(f"ladders: {time.time() - started:.0f} s")
    started = time.time()
    smooth = [(f"smooth/{p.stem}@{size}", p, size) for p in smooth_noise_photos() for size in SMOOTH_SIZES]
    cache_ladder_features(session, smooth, work / WORK_FILES["ladders"], only=SMOOTH_KINDS)
    _log(f"smooth-photo ladders: {time.time() - started:.0f} s")


TEACHER_HELP = "A no-reference iqa teacher, named as for export.distill.label: unipercept:<checkpoint folder>."
teacher_images_option = click.option(
    "--teacher-images", type=int, default=None, help="Label only the first N unrated photos (sorted); default all of them."
)


@main.command()
@work_option
@student_option
@click.option("--teacher", "teacher_spec", required=True, help=TEACHER_HELP)
@teacher_images_option
@click.option(
    "--photos",
    type=click.Path(exists=True, path_type=Path),
    multiple=True,
    default=(CORPUS,),
    show_default=True,
    help="Unrated photos; their training split (export/common/splits.py) is labelled.",
)
@click.option(
    "--dev/--no-dev",
    "with_dev",
    default=True,
    show_default=True,
    help="Also rate the dev photos' training part, to map the teacher's scale onto the MOS scale.",
)
def teacher(work: Path, student: Path, teacher_spec: str, teacher_images: int | None, photos: tuple[Path, ...], with_dev: bool) -> None:
    """Teacher iqa of unrated photos (WORK/teacher_labels.jsonl, resumed) and their crop features."""
    from .features import feature_session
    from .teacher import load_iqa_teacher, teacher_step

    try:
        loaded = load_iqa_teacher(teacher_spec)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    summary = teacher_step(loaded, feature_session(student, work), work, photos, teacher_images, dev_photos() if with_dev else ())
    _log(json.dumps(summary, indent=2))


@main.command()
@work_option
@click.option("--rank-weight", type=float, default=RANK_WEIGHT, show_default=True, help="Weight of the ladder ranking term.")
@click.option(
    "--teacher-weight",
    type=float,
    default=DEFAULT_TEACHER_WEIGHT,
    show_default=True,
    help="Weight of the teacher term relative to the human one, when `teacher` ran (0: off).",
)
def fit(work: Path, rank_weight: float, teacher_weight: float) -> None:
    """Fit the iqa head (writes WORK/iqa_head.pt and WORK/fit.json)."""
    from .fit import fit_iqa_head

    summary = fit_iqa_head(work, rank_weight=rank_weight, teacher_weight=teacher_weight)
    _log(json.dumps(summary, indent=2))


labels_option = click.option(
    "--labels",
    "label_files",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    multiple=True,
    default=(DISTILL_LABELS,),
    show_default=True,
    help="The student's distillation label file(s) (export.distill label): NIMA's iaa of clean, distorted and cropped corpus photos.",
)


@main.command()
@work_option
@student_option
@labels_option
def calibrate(work: Path, student: Path, label_files: tuple[Path, ...]) -> None:
    """The iaa blend (WORK/iaa_blend.npz, fitted to NIMA) and its map onto AVA's scale (WORK/iaa_knots.json)."""
    from .aesthetics import calibrate_iaa
    from .features import feature_session

    summary = calibrate_iaa(feature_session(student, work), label_files, work / WORK_FILES["iaa_knots"])
    _log(json.dumps(summary, indent=2))


@main.command("export")
@work_option
@student_option
def export_cmd(work: Path, student: Path) -> None:
    """Write WORK/model.onnx and WORK/model.int8.onnx."""
    from .export import export_package_files

    summary = export_package_files(work, student, [p for p, _, held in dev_photos() if not held][:64])
    _log(json.dumps(summary, indent=2))


@main.command()
@work_option
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Package folder to write (e.g. models/perceptlite-base)."
)
@click.option("--version", "version", default=PACKAGE_VERSION, show_default=True, help="Package version.")
@click.option("--name", default="perceptlite-base", show_default=True, help="Package name.")
@click.option(
    "--measure/--no-measure",
    default=True,
    show_default=True,
    help="Measure the written package through perceptlite.Scorer and put the numbers in its manifest and card.",
)
@click.option(
    "--reuse-measurement",
    is_flag=True,
    help="Take the numbers from WORK/acceptance.json instead of measuring again (refused unless it measured these very ONNX files).",
)
@click.option("--command", "command", default=None, help="The command line to record as provenance (default: this one).")
def package(work: Path, out: Path, version: str, name: str, measure: bool, reuse_measurement: bool, command: str | None) -> None:
    """Write the package; then measure it as users get it and write the numbers into it."""
    from .acceptance import measure_package
    from .package import write_quality_package

    command = command or _command_line()
    if reuse_measurement:
        write_quality_package(work, out, version, command, fidelity=reused_measurement(work), name=name)
    else:
        write_quality_package(work, out, version, command, fidelity=None, name=name)
        if measure:
            fidelity = measure_package(out, work)
            measured = {"files": model_digests(work), "fidelity": fidelity}
            (work / WORK_FILES["acceptance"]).write_text(json.dumps(measured, indent=2) + "\n")
            write_quality_package(work, out, version, command, fidelity=fidelity, name=name)
    click.echo(f"{out}: package written")


def model_digests(work: Path) -> dict[str, str]:
    from perceptlite.package.manifest import sha256_file

    return {filename: sha256_file(work / filename) for filename in VARIANT_FILES.values()}


def reused_measurement(work: Path) -> dict:
    """The fidelity numbers of WORK/acceptance.json, if they were measured on WORK's current ONNX files."""
    path = work / WORK_FILES["acceptance"]
    if not path.is_file():
        raise click.ClickException(f"{path}: no earlier measurement to reuse (run package without --reuse-measurement)")
    measured = json.loads(path.read_text())
    if measured.get("files") != model_digests(work):
        raise click.ClickException(f"{path}: measured other ONNX files than those in {work}; measure again")
    return measured["fidelity"]


@main.command("all")
@work_option
@student_option
@labels_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Package folder to write.")
@click.option("--teacher", "teacher_spec", default=None, help=TEACHER_HELP + " Adds the `teacher` step.")
@teacher_images_option
@click.pass_context
def all_steps(
    ctx: click.Context,
    work: Path,
    student: Path,
    label_files: tuple[Path, ...],
    out: Path,
    teacher_spec: str | None,
    teacher_images: int | None,
) -> None:
    """features, teacher (with --teacher), fit, calibrate, export, package (with measure)."""
    command = _command_line()
    ctx.invoke(features, work=work, student=student)
    if teacher_spec:
        ctx.invoke(
            teacher, work=work, student=student, teacher_spec=teacher_spec, teacher_images=teacher_images, photos=(CORPUS,), with_dev=True
        )
    ctx.invoke(fit, work=work, rank_weight=RANK_WEIGHT, teacher_weight=DEFAULT_TEACHER_WEIGHT)
    ctx.invoke(calibrate, work=work, student=student, label_files=label_files)
    ctx.invoke(export_cmd, work=work, student=student)
    ctx.invoke(package, work=work, out=out, version=PACKAGE_VERSION, name="perceptlite-base", measure=True, command=command)


if __name__ == "__main__":
    main()
