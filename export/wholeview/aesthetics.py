"""The iaa blend: the distilled student's iaa head plus a ridge on the whole view's block statistics.

The student was distilled from NIMA on the distillation's label records of the corpus's training part and
follows it there almost exactly, but less on held-out photos (0.81 SRCC on clean ones). A ridge fitted to
NIMA's iaa of those same records (clean photos, distorted copies and crops: about 10,000 images) on every
block's mean and standard deviation of the whole 224-px view (the statistics the iqa head reads on crops)
generalises about as well alone and errs differently; their blend follows NIMA closer on images neither saw.

    WORK/iaa_records.npz  per label record (all but held-out crops): NIMA's iaa (the record's label), the
                          head's raw iaa and the whole view's block statistics
    WORK/iaa_blend.npz    the ridge and the blend (read by quality_model.IaaBlend)
    WORK/iaa_blend.json   what the fit measured, and the label files it read
    WORK/iaa_knots.json   the blend's map onto the spread of AVA's human mean ratings (export/wholeview/calibration.py)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from export.common.errors import FactoryError
from export.common.ranks import spearman_or_zero
from export.common.splits import is_heldout
from export.distill.label import read_records
from export.distill.train import record_image
from perceptlite.backends.preprocess import prepare_pixels

from .config import WORK_FILES
from .features import FeatureSession, save_npz, student_heads

# Ridge penalty: the best of 1,000 / 3,000 / 10,000 / 30,000 in 5-fold cross-validation grouped by photo on the
# training records (ridge alone vs NIMA: 0.817 / 0.824 / 0.824 / 0.815).
IAA_RIDGE_ALPHA = 10000.0
# Share of the ridge in the blend (both standardised on the training part's clean photos). Cross-validation
# on the training records cannot choose it (the head was distilled on them, so any ridge only lowers it
# there); chosen on 300 dev photos (seed 0) by SRCC with NIMA: 0.5 (0.670; the other 300: 0.679).
IAA_BLEND_WEIGHT = 0.5


def blend_records(label_files: Sequence[Path]) -> list[dict]:
    """The records the blend reads: every training record, and the held-out photos' clean and distorted ones."""
    records = read_records(label_files)
    return [r for r in records if r.get("iaa") is not None and not (is_heldout(r["source"]) and r.get("view"))]


def record_kind(record: dict) -> str:
    return "view" if record.get("view") else "distorted" if record.get("distortion") else "clean"


def cache_record_aesthetics(session: FeatureSession, records: Sequence[dict], out: Path, batch: int = 16) -> None:
    """The head's raw iaa and the whole view's block statistics of every record's image (skipped when `out` exists)."""
    import torch

    if out.is_file():
        return
    heads = student_heads(out.parent)
    raw, blocks = [], []
    for start in tqdm(range(0, len(records), batch), desc="iaa records", unit="batch"):
        pixels = np.stack([prepare_pixels(record_image(r), session.spec) for r in records[start : start + batch]])
        features, stats = session.session.run(["features", "blocks"], {"pixels": pixels})
        with torch.no_grad():
            raw.append(heads(torch.from_numpy(features))[:, 0].numpy())
        blocks.append(stats)
    save_npz(
        out,
        sources=np.array([r["source"] for r in records]),
        heldout=np.array([is_heldout(r["source"]) for r in records]),
        kinds=np.array([record_kind(r) for r in records]),
        nima=np.array([r["iaa"] for r in records], dtype=np.float64),
        raw=np.concatenate(raw),
        blocks=np.concatenate(blocks),
    )


def fit_iaa_blend(work: Path, alpha: float = IAA_RIDGE_ALPHA, weight: float = IAA_BLEND_WEIGHT) -> dict:
    """Fit the ridge on the training records; write WORK/iaa_blend.npz and WORK/iaa_blend.json."""
    cache = np.load(work / WORK_FILES["iaa_records"])
    held, kinds = cache["heldout"], cache["kinds"]
    blocks, nima, raw = cache["blocks"].astype(np.float64), cache["nima"], cache["raw"].astype(np.float64)
    train, clean_train = ~held, ~held & (kinds == "clean")
    if clean_train.sum() < 2:
        raise FactoryError(
            f"{work / WORK_FILES['iaa_records']}: fewer than 2 clean training photos (export/common/splits.py) to fit the iaa blend on"
        )
    mean, std = blocks[train].mean(0), blocks[train].std(0) + 1e-6
    z = (blocks[train] - mean) / std
    target = nima[train]
    coef = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (target - target.mean()))
    ridge = ((blocks - mean) / std) @ coef + target.mean()
    ridge_std, raw_std = float(ridge[clean_train].std()), float(raw[clean_train].std())
    blend = blended_iaa(raw, ridge, weight, raw_std, ridge_std)
    np.savez(
        work / WORK_FILES["iaa_blend"],
        mean=mean,
        std=std,
        coef=coef,
        intercept=target.mean(),
        weight=weight,
        raw_std=raw_std,
        ridge_std=ridge_std,
    )
    rows = {"clean": held & (kinds == "clean"), "clean_and_distorted": held}
    summary = {
        "alpha": alpha,
        "blend_weight": weight,
        "train_records": int(train.sum()),
        "train_photos": int(clean_train.sum()),
        "heldout_photos": int(rows["clean"].sum()),
        "heldout_records": int(held.sum()),
        "heldout_srcc_vs_nima": {
            name: {
                "student_head": round(spearman_or_zero(raw[r], nima[r]), 4),
                "ridge": round(spearman_or_zero(ridge[r], nima[r]), 4),
                "blend": round(spearman_or_zero(blend[r], nima[r]), 4),
            }
            for name, r in rows.items()
        },
    }
    return summary


def blended_iaa(raw: np.ndarray, ridge: np.ndarray, weight: float, raw_std: float, ridge_std: float) -> np.ndarray:
    """The raw iaa the calibration maps onto AVA's spread (quality_model.IaaBlend computes the same in the graph)."""
    return (1.0 - weight) * raw / raw_std + weight * ridge / ridge_std


def blended_record_iaa(work: Path) -> tuple[np.ndarray, np.ndarray]:
    """The blend's raw iaa of every record of WORK/iaa_records.npz, and which records are clean photos."""
    cache, fit = np.load(work / WORK_FILES["iaa_records"]), np.load(work / WORK_FILES["iaa_blend"])
    ridge = ((cache["blocks"].astype(np.float64) - fit["mean"]) / fit["std"]) @ fit["coef"] + fit["intercept"]
    blend = blended_iaa(cache["raw"].astype(np.float64), ridge, float(fit["weight"]), float(fit["raw_std"]), float(fit["ridge_std"]))
    return blend, cache["kinds"] == "clean"


def calibrate_iaa(session: FeatureSession, label_files: Sequence[Path], out: Path) -> dict:
    """Cache the records, fit the blend, then match its spread on the clean photos to AVA's (WORK/iaa_knots.json)."""
    from .calibration import apply_knots, ava_mean_scores, ava_scale, quantile_knots

    work = out.parent
    cache_record_aesthetics(session, blend_records(label_files), work / WORK_FILES["iaa_records"])
    blend = {**fit_iaa_blend(work), "labels": [str(p) for p in label_files]}
    (work / WORK_FILES["iaa_blend_summary"]).write_text(json.dumps(blend, indent=2) + "\n")
    raw, clean = blended_record_iaa(work)
    raw_iaa = raw[clean]
    target = ava_scale(ava_mean_scores())
    knots = quantile_knots(raw_iaa, target)
    mapped = apply_knots(raw_iaa, knots)
    summary = {
        "knots": knots,
        "photos": int(clean.sum()),
        "blend": blend,
        "raw_quartiles": np.percentile(raw_iaa, [25, 50, 75]).round(3).tolist(),
        "calibrated_quartiles": np.percentile(mapped, [25, 50, 75]).round(2).tolist(),
        "ava_quartiles": np.percentile(target, [25, 50, 75]).round(2).tolist(),
    }
    out.write_text(json.dumps(summary, indent=2) + "\n")
    return summary
