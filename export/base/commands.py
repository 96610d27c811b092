"""`python -m export.base`: the recipe of the bundled package, one resumable step at a time.

iqa-cv     5-fold cross-validation of the iqa training over every rated dev photo   WORK/iqa-cv/summary.json
iqa-train  the shipped crop network, trained on all of them                         WORK/iqa/checkpoint.pt
export     the source package's whole view + the crop network, checked, int8        WORK/model*.onnx
package    measured as users get it, then written with its manifest and card        OUT, WORK/acceptance.json
all        the four in order; each skips what its outputs already hold
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import click

from export.common.errors import FactoryError

from .iqa_training import RatedPhoto, TrainingConfig, UnratedPhoto
from .photos import CORPUS, corpus_damage_photos, professional_eval_photos, professional_training_photos, rated_photos

SOURCE_PACKAGE = Path("models/perceptlite-base")
RECIPE_COMMAND = "python -m export.base all --work artifacts/base --out models/perceptlite-base"


@dataclass(frozen=True)
class Recipe:
    """How much of each photo set a run uses: everything, or a few photos for `--smoke`."""

    rated: int | None = None
    professional: int | None = None
    corpus: int | None = None
    folds: int = 5
    calibration: int = 64
    eval_photos: int | None = None
    variant_photos_step: int = 6
    ladder_sizes: tuple[int, ...] = (500, 1500, 4000)
    nima_photos: int | None = None
    config: TrainingConfig = TrainingConfig()


FULL = Recipe()
SMOKE = Recipe(
    rated=16,
    professional=1,
    corpus=2,
    folds=2,
    calibration=4,
    eval_photos=1,
    variant_photos_step=8,
    ladder_sizes=(500,),
    nima_photos=2,
    config=TrainingConfig(epochs=1, probe_steps=20, stored_sizes=(500, 1000)),
)


def _recipe(smoke: bool) -> Recipe:
    return SMOKE if smoke else FULL


def _photo_sets(recipe: Recipe) -> tuple[list[RatedPhoto], list[UnratedPhoto]]:
    rated = [RatedPhoto(path, mos) for path, mos in rated_photos()][: recipe.rated]
    unrated = [UnratedPhoto(p, True) for p in professional_training_photos()[: recipe.professional]]
    unrated += [UnratedPhoto(p, False) for p in corpus_damage_photos()[: recipe.corpus]]
    return rated, unrated


def _echo(message: str) -> None:
    click.echo(message, err=True)


work_option = click.option(
    "--work",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("artifacts/base"),
    show_default=True,
    help="Work folder: every step's outputs and checkpoints (resumable).",
)
smoke_option = click.option("--smoke", is_flag=True, help="A few photos and one short epoch: the whole recipe in minutes, for tests.")
source_option = click.option(
    "--source",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=SOURCE_PACKAGE,
    show_default=True,
    help="The package whose whole view (iaa, ista) is kept; pinned into WORK/source on the first run.",
)
out_option = click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=SOURCE_PACKAGE,
    show_default=True,
    help="The package folder to write (its ONNX files, manifest and card are replaced).",
)


@click.group()
def main() -> None:
    """Build the bundled perceptlite-base package (see export/README.md)."""


def _timed(step: str):
    """Run a step, print its time, and turn the factory's errors into one-line exits."""

    def wrap(function):
        def run(*args, **kwargs):
            started = time.time()
            try:
                result = function(*args, **kwargs)
            except FactoryError as exc:
                raise click.ClickException(str(exc)) from exc
            _echo(f"{step}: {time.time() - started:.0f} s")
            return result

        run.__name__, run.__doc__ = function.__name__, function.__doc__
        return run

    return wrap


@_timed("iqa-cv")
def run_cv(work: Path, recipe: Recipe) -> dict:
    from .crossval import cross_validate

    rated, unrated = _photo_sets(recipe)
    summary = cross_validate(rated, unrated, recipe.config, work / "iqa-cv", folds=recipe.folds, log=_echo)
    click.echo(json.dumps({k: summary[k] for k in ("pooled", "mean_of_folds")}, indent=2))
    return summary


@_timed("iqa-train")
def run_train(work: Path, recipe: Recipe) -> None:
    from .iqa_training import Trainer

    rated, unrated = _photo_sets(recipe)
    Trainer(rated, unrated, recipe.config, work / "iqa", log=_echo).fit()


@_timed("export")
def run_export(work: Path, source: Path, recipe: Recipe) -> dict:
    from .export import export_package_files

    summary = export_package_files(work, _pin_source(work, source), rated_photos()[: recipe.calibration])
    click.echo(json.dumps(summary, indent=2))
    return summary


@_timed("package")
def run_package(work: Path, out: Path, recipe: Recipe) -> None:
    from .package import build_manifest, read_json, write

    source = read_json(work / "source" / "perceptlite.json")
    summary = read_json(work / "iqa-cv" / "summary.json")
    train = training_record(work)
    # Measured on a staging copy, so OUT is replaced once, with its numbers in it.
    staging = work / "staging"
    write(staging, work, build_manifest(source, summary, train, {}, RECIPE_COMMAND))
    acceptance = _measured(work, staging, recipe)
    write(out, work, build_manifest(source, summary, train, acceptance, RECIPE_COMMAND))
    _echo(f"{out}: package written")


def _measured(work: Path, staging: Path, recipe: Recipe) -> dict:
    """WORK/acceptance.json when it measured these very ONNX files; else measure the staging package (and keep it)."""
    from perceptlite import Scorer
    from perceptlite.package.manifest import sha256_file

    from .acceptance import iaa_and_ista, iaa_vs_nima, measure
    from .package import VARIANT_FILES

    path = work / "acceptance.json"
    files = {name: sha256_file(work / name) for name in VARIANT_FILES.values()}
    if path.is_file() and json.loads(path.read_text()).get("files") == files:
        _echo(f"{path}: measured these ONNX files already; reused")
        acceptance = json.loads(path.read_text())
    else:
        acceptance = measure(
            staging,
            work / "source",
            professional_eval_photos()[: recipe.eval_photos],
            [p for p, _ in rated_photos()[: recipe.rated]][:: recipe.variant_photos_step],
            recipe.ladder_sizes,
            log=_echo,
        )
        acceptance["files"] = files
    if "iaa_vs_nima" not in acceptance:  # also added to a reused measurement that predates it
        acceptance["iaa_vs_nima"] = iaa_vs_nima(Scorer(staging, device="cpu"), work / "nima-heldout.jsonl", recipe.nima_photos)
        _echo(f"  iaa vs NIMA on held-out records: {acceptance['iaa_vs_nima']}")
    if "iaa_and_ista" not in acceptance:
        acceptance["iaa_and_ista"] = iaa_and_ista(Scorer(staging, device="cpu"), recipe.nima_photos)
        _echo(f"  iaa and ista on held-out corpus photos: {acceptance['iaa_and_ista']}")
    path.write_text(json.dumps(acceptance, indent=2) + "\n")
    return acceptance


def _pin_source(work: Path, source: Path) -> Path:
    """WORK/source: the package whose whole view is copied, pinned on the first run so reruns copy the same one."""
    pinned = work / "source"
    if not (pinned / "perceptlite.json").is_file():
        partial = work / "source.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for name in ("perceptlite.json", "model.onnx", "model.int8.onnx", "MODEL_CARD.md"):
            shutil.copyfile(source / name, partial / name)
        partial.replace(pinned)
    return pinned


def training_record(work: Path) -> dict:
    """What the shipped crop network was trained on, and how long each epoch took, from its checkpoint."""
    import torch

    from .package import PackageError

    checkpoint = work / "iqa" / "checkpoint.pt"
    if not checkpoint.is_file():
        raise PackageError(f"{checkpoint}: missing; run `python -m export.base iqa-train` first")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    signature, history = state["signature"], state["history"]
    return {
        "rated_photos": len(signature["rated"]),
        "unrated_photos": len(signature["unrated"]),
        "professional_photos": sum(1 for p in signature["unrated"] if not p.startswith(str(CORPUS))),
        "epochs": state["epoch"],
        "seconds": round(sum(h["seconds"] for h in history)),
        "history": history,
    }


@main.command("iqa-cv")
@work_option
@smoke_option
def iqa_cv(work: Path, smoke: bool) -> None:
    """Cross-validate the iqa training over every rated dev photo (WORK/iqa-cv/summary.json)."""
    run_cv(work, _recipe(smoke))


@main.command("iqa-train")
@work_option
@smoke_option
def iqa_train(work: Path, smoke: bool) -> None:
    """Train the shipped iqa crop network on every rated dev photo (WORK/iqa/checkpoint.pt)."""
    run_train(work, _recipe(smoke))


@main.command("export")
@work_option
@source_option
@smoke_option
def export_cmd(work: Path, source: Path, smoke: bool) -> None:
    """WORK/model.onnx (the source's whole view + the trained crop network) and WORK/model.int8.onnx."""
    run_export(work, source, _recipe(smoke))


@main.command("package")
@work_option
@out_option
@smoke_option
def package_cmd(work: Path, out: Path, smoke: bool) -> None:
    """Measure the exported files as users get them (WORK/acceptance.json), then write the package to OUT."""
    run_package(work, out, _recipe(smoke))


@main.command("all")
@work_option
@source_option
@out_option
@smoke_option
def all_steps(work: Path, source: Path, out: Path, smoke: bool) -> None:
    """iqa-cv, iqa-train, export and package, in order (a rerun resumes where the last one stopped)."""
    recipe = _recipe(smoke)
    started = time.time()
    run_cv(work, recipe)
    run_train(work, recipe)
    run_export(work, source, recipe)
    run_package(work, out, recipe)
    _echo(f"all: {time.time() - started:.0f} s")


@main.command("own-ratings")
@click.argument("images", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("scores", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The new package folder (must not exist or be empty).")
@click.option(
    "--package",
    "base",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=SOURCE_PACKAGE,
    show_default=True,
    help="The package to start from: its crop network's features (head only) or its whole view (--end-to-end).",
)
@click.option(
    "--end-to-end", is_flag=True, help="Train the crop network itself (the bundled recipe, hours on a CPU) instead of the head only."
)
@click.option(
    "--work",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("artifacts/own"),
    show_default=True,
    help="Work folder of --end-to-end (checkpoints: a rerun resumes).",
)
@click.option("--name", default=None, help="The new package's name (default: the base's, with -own).")
def own_ratings(images: Path, scores: Path, out: Path, base: Path, end_to_end: bool, work: Path, name: str | None) -> None:
    """Fit iqa to your own ratings: IMAGES holds the files, SCORES is a `file,score` table (paths relative to IMAGES)."""
    from .own_ratings import fit_own_package

    started = time.time()
    try:
        result = fit_own_package(images, scores, out, base, end_to_end, work, name, log=_echo)
    except FactoryError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(result, indent=2))
    _echo(f"own-ratings: {time.time() - started:.0f} s -> {out}")
