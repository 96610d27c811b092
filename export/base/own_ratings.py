"""Train iqa on your own ratings: a folder of images and a `file,score` table -> a package `perceptlite score -m` loads.

Head only (the default, minutes on a CPU): the package's crop network stays as shipped; a ridge on the
crop-pooled features it already computes (the package graph's `iqa_features` output) is fitted to the
scores, its strength chosen by cross-validation inside each training fold, and spliced into every variant
in place of the shipped iqa head. End to end (`--end-to-end`): the crop network itself is trained from
ImageNet on the ratings with the bundled recipe (export/base/iqa_training.py), then combined and quantised
like the bundled package. Either way the agreement printed is cross-validated: every photo is scored by
a model that never saw it.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.common.errors import FactoryError
from perceptlite.datasets.metrics import agreement

from .package_model import FEATURES, _iqa_unsqueeze, _prune, _toposort

ALPHAS = (1.0, 10.0, 100.0, 1000.0, 10000.0)
FOLDS = 5
MIN_PHOTOS = 10


class RatingsError(FactoryError, ValueError):
    """The ratings or the package cannot make a model."""


@dataclass(frozen=True)
class Rating:
    path: Path
    score: float


def read_ratings(images: Path, table: Path, warn: Callable[[str], None] = print) -> list[Rating]:
    """Rows of `file,score` (a header row is allowed); a row that names no readable file or no finite score is
    reported in one line and left out."""
    ratings = []
    with open(table, newline="", encoding="utf-8") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or (number == 1 and _is_header(row)):
                continue
            if len(row) < 2:
                warn(f"{table}:{number}: expected file,score; skipped")
                continue
            name, value = row[0].strip(), row[1].strip()
            try:
                score = float(value)
            except ValueError:
                score = math.nan
            if not math.isfinite(score):
                warn(f"{table}:{number}: score {value!r} is not a number; skipped")
                continue
            path = images / name
            if not path.is_file():
                warn(f"{path}: no such file (row {number} of {table}); skipped")
                continue
            ratings.append(Rating(path, score))
    if len(ratings) < MIN_PHOTOS:
        raise RatingsError(f"{table}: {len(ratings)} usable ratings; cross-validation needs at least {MIN_PHOTOS}")
    return ratings


def _is_header(row: Sequence[str]) -> bool:
    try:
        float(row[1])
    except (ValueError, IndexError):
        return True
    return False


def crop_features(package: Path, ratings: Sequence[Rating], warn: Callable[[str], None] = print) -> tuple[np.ndarray, list[Rating]]:
    """The package's `iqa_features` of every rated image (fp32 variant, the runtime's decode and crops)."""
    import onnxruntime as ort

    from perceptlite.backends.preprocess import prepare_crops, prepare_pixels
    from perceptlite.images.decode import decode_file
    from perceptlite.package.manifest import load_package

    loaded = load_package(package)
    model = package / loaded.variants.get("fp32", loaded.variants[loaded.variant_name(None)])
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    if FEATURES not in {o.name for o in session.get_outputs()}:
        raise RatingsError(f"{package}: its graph has no {FEATURES!r} output (packages before perceptlite-base 0.6.0); use --end-to-end")
    rows, kept = [], []
    for rating in ratings:
        try:
            image = decode_file(rating.path).image
        except Exception as exc:  # noqa: BLE001 - any undecodable file is reported and skipped
            warn(f"{rating.path}: {exc}; skipped")
            continue
        feed = {"pixels": prepare_pixels(image, loaded.input)[None], "crops": prepare_crops(image, loaded.input)[None]}
        rows.append(session.run([FEATURES], feed)[0][0])
        kept.append(rating)
    return np.asarray(rows, dtype=np.float64), kept


@dataclass(frozen=True)
class Ridge:
    weight: np.ndarray  # on raw features (standardisation folded in)
    bias: float
    alpha: float

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.clip(features @ self.weight + self.bias, 0.0, 100.0)


def fit_ridge(features: np.ndarray, scores: np.ndarray, alpha: float) -> Ridge:
    mean, std = features.mean(axis=0), features.std(axis=0) + 1e-6
    x = (features - mean) / std
    coef = np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ (scores - scores.mean()))
    weight = coef / std
    return Ridge(weight, float(scores.mean() - mean @ weight), alpha)


def folds_of(count: int, folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(count) % folds


def choose_alpha(features: np.ndarray, scores: np.ndarray) -> float:
    """The ridge strength with the lowest cross-validated absolute error, over these photos only."""
    assignment = folds_of(len(scores), min(FOLDS, len(scores)), seed=1)
    errors = []
    for alpha in ALPHAS:
        error = 0.0
        for fold in np.unique(assignment):
            train, test = assignment != fold, assignment == fold
            error += float(np.abs(fit_ridge(features[train], scores[train], alpha).predict(features[test]) - scores[test]).sum())
        errors.append(error)
    return ALPHAS[int(np.argmin(errors))]


def cross_validated_head(features: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Each photo's prediction by a ridge fitted (strength chosen inside the fold) on the other folds."""
    predictions, alphas = np.zeros(len(scores)), []
    assignment = folds_of(len(scores))
    for fold in range(FOLDS):
        train, test = assignment != fold, assignment == fold
        alpha = choose_alpha(features[train], scores[train])
        predictions[test] = fit_ridge(features[train], scores[train], alpha).predict(features[test])
        alphas.append(alpha)
    return predictions, alphas


def summary(predictions: np.ndarray, scores: np.ndarray) -> dict:
    result = agreement(predictions, scores)
    return {
        "srcc": round(result.srcc, 4),
        "plcc": round(result.plcc, 4),
        "mae": round(float(np.abs(predictions - scores).mean()), 2),
        "photos": len(scores),
    }


def splice_head(source: Path, ridge: Ridge, out: Path) -> Path:
    """A copy of one variant's graph whose iqa is `ridge` on the graph's own `iqa_features`."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    weight = numpy_helper.from_array(ridge.weight.astype(np.float32)[:, None], "own_head/weight")
    bias = numpy_helper.from_array(np.array([ridge.bias], np.float32), "own_head/bias")
    low, high = (
        numpy_helper.from_array(np.array(0.0, np.float32), "own_head/low"),
        numpy_helper.from_array(np.array(100.0, np.float32), "own_head/high"),
    )
    axes = numpy_helper.from_array(np.array([1], np.int64), "own_head/axes")
    existing = {i.name for i in graph.initializer}
    graph.initializer.extend(i for i in (weight, bias, low, high, axes) if i.name not in existing)
    graph.node.extend(
        [
            helper.make_node("MatMul", [FEATURES, "own_head/weight"], ["own_head/matmul"], name="own_head/MatMul"),
            helper.make_node("Add", ["own_head/matmul", "own_head/bias"], ["own_head/add"], name="own_head/Add"),
            helper.make_node("Squeeze", ["own_head/add", "own_head/axes"], ["own_head/squeeze"], name="own_head/Squeeze"),
            helper.make_node("Clip", ["own_head/squeeze", "own_head/low", "own_head/high"], ["own_head/iqa"], name="own_head/Clip"),
        ]
    )
    _iqa_unsqueeze(graph).input[0] = "own_head/iqa"
    # iqa_features stays an output, so a second fit on top of this package works the same way.
    _toposort(graph)
    _prune(graph)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out


def write_own_package(
    source: Path, out: Path, ridge: Ridge | None, manifest_changes: dict, build: Callable[[Path, Path], None] | None = None
) -> Path:
    """The new package in `out` (a new folder): every variant with the new iqa, manifest and card."""
    from perceptlite.package.manifest import write_package

    if out.exists() and any(out.iterdir()):
        raise RatingsError(f"{out}: not empty; name a new folder for the package")
    manifest = json.loads((source / "perceptlite.json").read_text())
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in manifest["variants"].values():
        if ridge is not None:
            splice_head(source / name, ridge, partial / name)
    if build is not None:
        build(source, partial)
    manifest = {**manifest, **manifest_changes, "files": list(manifest["variants"].values())}
    manifest.pop("format", None)
    write_package(partial, manifest, own_card(manifest))
    if out.exists():
        out.rmdir()
    partial.replace(out)
    return out


def own_card(manifest: dict) -> str:
    iqa, cv = manifest["provenance"]["iqa"], manifest["fidelity"]["human_cross_validated"]
    return "\n".join(
        [
            f"# {manifest['name']} {manifest['version']}",
            "",
            f"`iqa` fitted to {cv['photos']} ratings of your own ({iqa['trained_on']}).",
            "",
            "## Agreement with your ratings: cross-validated",
            "",
            f"{cv['how']}: SRCC {cv['srcc']:.3f}, PLCC {cv['plcc']:.3f}, mean absolute error {cv['mae']:.2f}.",
            "",
            f"- `iqa`: {iqa['what']}.",
            f"- `iaa` and `ista`: unchanged from {iqa['base']}.",
            "",
        ]
    )


def fit_own_package(
    images: Path, table: Path, out: Path, base: Path, end_to_end: bool, work: Path, name: str | None, log: Callable[[str], None] = print
) -> dict:
    """Read the ratings, cross-validate, fit on all of them, write the package; the cross-validated agreement."""
    ratings = read_ratings(images, table, warn=log)
    source = json.loads((base / "perceptlite.json").read_text())
    if end_to_end:
        cv, what, build = _end_to_end(ratings, base, work, log)
        ridge = None
    else:
        features, ratings = crop_features(base, ratings, warn=log)
        scores = np.array([r.score for r in ratings])
        log(f"features of {len(ratings)} photos; cross-validating the head ({FOLDS} folds, ridge strength chosen inside each)")
        predictions, alphas = cross_validated_head(features, scores)
        cv = summary(predictions, scores) | {"ridge_alpha_per_fold": alphas}
        ridge = fit_ridge(features, scores, choose_alpha(features, scores))
        what = f"a ridge (alpha {ridge.alpha:g}) on the crop network's pooled block statistics, the network as in {source['name']} {source['version']}"
        build = None
    base_name = f"{source['name']} {source['version']}"
    changes = {
        "name": name or f"{source['name']}-own",
        "description": f"{source['name']} with iqa fitted to your own ratings ({table.name})",
        "provenance": {
            **source["provenance"],
            "iqa": {"what": what, "trained_on": f"{len(ratings)} rows of {table} (images in {images})", "base": base_name},
        },
        "fidelity": {
            "human_cross_validated": {
                **cv,
                "how": f"{FOLDS}-fold cross-validation over your {len(ratings)} ratings, every choice made inside the training folds",
            }
        },
    }
    write_own_package(base, out, ridge, changes, build)
    return changes["fidelity"]["human_cross_validated"]


def _end_to_end(ratings: Sequence[Rating], base: Path, work: Path, log: Callable[[str], None]):
    """Cross-validate and train the crop network from ImageNet on the ratings (export/base/iqa_training.py)."""
    from export.common.quantize import quantize_int8

    from .crossval import cross_validate
    from .export import runtime_inputs
    from .iqa_training import RatedPhoto, Trainer, TrainingConfig
    from .package_model import build_package_onnx

    rated = [RatedPhoto(r.path, r.score) for r in ratings]
    config = TrainingConfig()
    result = cross_validate(rated, [], config, work / "cv", log=log)
    net = Trainer(rated, [], config, work / "train", log=log).fit()

    def build(source: Path, folder: Path) -> None:
        manifest = json.loads((source / "perceptlite.json").read_text())
        fp32 = build_package_onnx(source / manifest["variants"]["fp32"], net, folder / manifest["variants"]["fp32"])
        if "int8" in manifest["variants"]:
            quantize_int8(fp32, folder / manifest["variants"]["int8"], runtime_inputs([r.path for r in ratings[:64]]))

    what = "EfficientNet-Lite0 fine-tuned end to end on your ratings (LP-FT, export/base/iqa_training.py), beside the base's whole view"
    return result["pooled"], what, build
