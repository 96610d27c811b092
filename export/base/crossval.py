"""Cross-validated agreement with people of the iqa training recipe: every fold trains from ImageNet.

The rated photos are split into `photos.FOLDS` folds by the sha256 of their file names. For each fold the
recipe trains on the others with the one fixed `TrainingConfig` (nothing is chosen on the fold it is
measured on), then scores the fold through the runtime's crops. Each fold's predictions are a file, so a
killed run resumes at the fold it was in (and inside it at the last finished epoch).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from perceptlite.datasets.metrics import agreement, plcc

from .iqa_training import CROP_LAYOUTS, RatedPhoto, Trainer, TrainingConfig, UnratedPhoto, _load, predict
from .photos import FOLDS, fold_of


def cross_validate(
    rated: Sequence[RatedPhoto],
    unrated: Sequence[UnratedPhoto],
    config: TrainingConfig,
    folder: Path,
    folds: int = FOLDS,
    log: Callable[[str], None] = print,
) -> dict:
    """Train and measure every fold (resuming what `folder` holds); the pooled and per-fold agreement."""
    folder.mkdir(parents=True, exist_ok=True)
    predictions: dict[str, float] = {}
    layout_predictions: dict[str, dict[str, float]] = {}
    per_fold = {}
    for fold in range(folds):
        out = folder / f"fold-{fold}.json"
        train = [p for p in rated if fold_of(p.path.name, folds) != fold]
        test = [p for p in rated if fold_of(p.path.name, folds) == fold]
        if not out.is_file():
            started = time.time()
            log(f"fold {fold + 1}/{folds}: training on {len(train)} photos, measuring on {len(test)}")
            net = Trainer(train, unrated, config, folder / f"fold-{fold}", log=log).fit()
            images = [_load(p.path) for p in test]
            record = {
                "seconds": round(time.time() - started),
                "predictions": dict(zip((p.path.name for p in test), map(float, predict(net, images)))),
                "layouts": _layouts(net, test, images),
            }
            _write(out, record)
        elif "layouts" not in json.loads(out.read_text()):
            # A fold measured before the layouts were: its finished checkpoint scores them, nothing retrains.
            net = Trainer(train, unrated, config, folder / f"fold-{fold}", log=log).fit()
            _write(out, json.loads(out.read_text()) | {"layouts": _layouts(net, test, [_load(p.path) for p in test])})
        record = json.loads(out.read_text())
        fold_scores = record["predictions"]
        per_fold[fold] = _summary(fold_scores, test) | {"seconds": record["seconds"]}
        predictions |= fold_scores
        for name, values in record.get("layouts", {}).items():
            layout_predictions.setdefault(name, {}).update(values)
        log(f"fold {fold + 1}/{folds}: {per_fold[fold]}")
    pooled = _summary(predictions, rated)
    summary = {
        "folds": folds,
        "photos": len(predictions),
        "pooled": pooled,
        "per_fold": per_fold,
        "mean_of_folds": {k: round(float(np.mean([f[k] for f in per_fold.values()])), 4) for k in ("srcc", "plcc", "mae")},
        # Not a choice: the package's layout is fixed; these show what other crop counts would give.
        "crop_layouts": {name: _summary(values, rated) for name, values in layout_predictions.items()},
        "config": asdict(config),
        "unrated_photos": len(unrated),
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _layouts(net, photos: Sequence[RatedPhoto], images: list) -> dict[str, dict[str, float]]:
    """Each photo's iqa through each of CROP_LAYOUTS."""
    names = [p.path.name for p in photos]
    return {name: dict(zip(names, map(float, predict(net, images, cells=cells)))) for name, cells in CROP_LAYOUTS.items()}


def _write(out: Path, record: dict) -> None:
    partial = out.with_name(out.name + ".partial")
    partial.write_text(json.dumps(record, indent=1))
    partial.replace(out)


def _summary(predictions: dict[str, float], photos: Sequence[RatedPhoto]) -> dict:
    truth = {p.path.name: p.mos for p in photos}
    names = [n for n in predictions if n in truth]
    pred, mos = np.array([predictions[n] for n in names]), np.array([truth[n] for n in names])
    result = agreement(pred, mos)
    return {
        "srcc": round(result.srcc, 4),
        "plcc": round(result.plcc, 4),
        "plcc_linear": round(plcc(pred, mos, fit=False), 4),
        "mae": round(float(np.abs(pred - mos).mean()), 2),
        "photos": len(names),
    }
