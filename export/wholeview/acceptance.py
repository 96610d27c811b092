"""What users get, measured: the written package scored through perceptlite.Scorer.

- `human`: iqa against the mean opinion scores of the dev photos never trained on (and, for
  reference, the cross-validated numbers of the fit);
- `ladders`: Spearman of distortion level vs iqa, per photo, averaged, for each kind at each size,
  on wallpaper photos never trained on;
- `size_drift`: clean iqa of those photos at each size and at their own;
- `iaa`: agreement with NIMA on corpus photos held out from distillation, and the spread of iaa;
- `ista`: the median-smoothing ladder (must fall) and the noise ladder (must not rise);
- `int8_vs_fp32`: SRCC between the two variants on every axis.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from export.common.errors import FactoryError
from export.common.ranks import spearman_or_zero
from export.common.size_ladders import LADDER_KINDS, LADDER_LEVELS, ladder_image, resize_long_side, smooth_ladder_image
from export.common.splits import is_heldout
from perceptlite import Scorer

from .config import CORPUS, EVAL_WALLPAPERS, WORK_FILES, dev_photos, wallpaper_photo
from .fit import agreement

LADDER_SIZES = (500, 1500, 4000)
DRIFT_SIZES = (500, 1000, 1500, 2000, 4000)  # around the crops' 1,536-px working size
LADDER_PHOTOS = len(EVAL_WALLPAPERS)
TARGETS = {
    "iqa_srcc": 0.82,
    "iqa_plcc": 0.82,
    "iqa_mae": 15.0,
    "ladder": -0.8,
    "iaa_vs_nima_srcc": 0.84,
    "iaa_iqr": 10.0,
    "ista_smoothing": -0.85,
}


def score_paths(scorer: Scorer, paths: Sequence[Path], desc: str) -> np.ndarray:
    """[N, 3] (iaa, iqa, ista) for image files, decoded by the runtime."""
    rows = []
    for result in tqdm(scorer.score_many([str(p) for p in paths]), total=len(paths), desc=desc, unit="img"):
        if result.error:
            raise FactoryError(f"{result.path}: {result.error}")
        rows.append((result.iaa, result.iqa, result.ista))
    return np.asarray(rows, dtype=np.float64)


def score_images(scorer: Scorer, images: Sequence[Image.Image]) -> np.ndarray:
    results = [scorer.score(image) for image in images]
    return np.asarray([(r.iaa, r.iqa, r.ista) for r in results], dtype=np.float64)


def human_agreement(scorer: Scorer) -> dict:
    photos = dev_photos()
    scores = score_paths(scorer, [p for p, _, _ in photos], "dev photos")
    mos = np.array([m for _, m, _ in photos])
    held = np.array([h for _, _, h in photos])
    iaa = scores[:, 0]
    return {
        "heldout": agreement(scores[held, 1], mos[held]),
        "all_600_of_which_75pct_trained_on": agreement(scores[:, 1], mos),
        "iaa_quartiles_dev_photos": np.percentile(iaa, [25, 50, 75]).round(2).tolist(),
        "iqa_mean_dev_photos": round(float(scores[:, 1].mean()), 2),
        "mos_mean_dev_photos": round(float(mos.mean()), 2),
    }


def size_ladders(scorer: Scorer, photos: Sequence[str], sizes: Sequence[int] = LADDER_SIZES) -> dict:
    """{kind: {size: mean per-photo Spearman(level, iqa)}}."""
    result: dict[str, dict[str, float]] = {kind: {} for kind in LADDER_KINDS}
    for size in sizes:
        per_kind: dict[str, list[float]] = {kind: [] for kind in LADDER_KINDS}
        for name in tqdm(photos, desc=f"ladders at {size} px", unit="photo"):
            with Image.open(wallpaper_photo(name)) as source:
                image = resize_long_side(source, size)
            for kind in LADDER_KINDS:
                levels = range(len(LADDER_LEVELS[kind]) + 1)
                iqa = score_images(scorer, [ladder_image(image, kind, level, name) for level in levels])[:, 1]
                per_kind[kind].append(spearman_or_zero(list(levels), iqa))
        for kind, values in per_kind.items():
            result[kind][str(size)] = round(float(np.mean(values)), 3)
    return result


def size_drift(scorer: Scorer, photos: Sequence[str], sizes: Sequence[int] = DRIFT_SIZES) -> dict:
    """Clean iqa of the same photos at each size and at their own (native) size: up to the crops' working
    size they judge pixels at 100 %, so a photo can score below the same photo downscaled."""
    per_photo: dict[str, dict[str, float]] = {}
    native_sizes = set()
    for name in photos:
        with Image.open(wallpaper_photo(name)) as source:
            native = source.convert("RGB")
        native_sizes.add(max(native.size))
        views = {str(size): resize_long_side(native, size) for size in sizes}
        views["native"] = native
        iqa = score_images(scorer, list(views.values()))[:, 1]
        per_photo[name] = {key: round(float(value), 1) for key, value in zip(views, iqa)}
    keys = [*map(str, sizes), "native"]
    return {
        "native_long_side_px": sorted(native_sizes),
        "mean_clean_iqa": {key: round(float(np.mean([v[key] for v in per_photo.values()])), 1) for key in keys},
        "per_photo": per_photo,
    }


def heldout_corpus() -> list[Path]:
    """Every corpus photo held out from distillation and from the iaa blend's fit (242)."""
    return sorted(p for p in CORPUS.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg") and is_heldout(p.name))


def iaa_and_ista(scorer: Scorer, corpus: Sequence[Path], ladder_photos: int = 12) -> dict:
    from export.teachers.nima import NimaTeacher

    scores = score_paths(scorer, corpus, "held-out corpus")
    nima = NimaTeacher()
    nima_iaa = [nima.label(Image.open(p).convert("RGB"))["iaa"] for p in tqdm(corpus, desc="NIMA", unit="img")]
    smoothing, noise = [], []
    for path in corpus[:ladder_photos]:
        image = Image.open(path).convert("RGB")
        smoothing.append(spearman_or_zero(range(6), score_images(scorer, [smooth_ladder_image(image, lv) for lv in range(6)])[:, 2]))
        noise.append(
            spearman_or_zero(
                range(6), score_images(scorer, [ladder_image(image, "gaussian_noise", lv, path.name) for lv in range(6)])[:, 2]
            )
        )
    return {
        "iaa_vs_nima_srcc": round(spearman_or_zero(scores[:, 0], nima_iaa), 4),
        "iaa_quartiles_corpus": np.percentile(scores[:, 0], [25, 50, 75]).round(2).tolist(),
        "ista_median_smoothing_ladder": round(float(np.mean(smoothing)), 3),
        "ista_noise_ladder": round(float(np.mean(noise)), 3),
        "images": len(corpus),
    }


def iaa_on_heldout_records(scorer: Scorer, work: Path) -> dict:
    """`iaa` vs NIMA on the held-out photos' clean and distorted label records: 0.1.0's acceptance protocol,
    where "today's 0.84" was measured (the label files the blend was fitted from, WORK/iaa_blend.json)."""
    from export.distill.train import record_image

    from .aesthetics import blend_records

    labels = [Path(p) for p in json.loads((work / WORK_FILES["iaa_blend_summary"]).read_text())["labels"]]
    records = [r for r in blend_records(labels) if is_heldout(r["source"])]
    images = (record_image(r) for r in records)
    iaa = [r.iaa for r in tqdm(scorer.score_many(images), total=len(records), desc="held-out records", unit="img")]
    return {
        "iaa_vs_nima_srcc_heldout_records": round(spearman_or_zero(iaa, [r["iaa"] for r in records]), 4),
        "heldout_records": len(records),
    }


def variant_agreement(package: Path, paths: Sequence[Path]) -> dict:
    fp32 = score_paths(Scorer(package, device="cpu", variant="fp32"), paths, "fp32")
    int8 = score_paths(Scorer(package, device="cpu", variant="int8"), paths, "int8")
    return {
        axis: {
            "srcc": round(spearman_or_zero(fp32[:, i], int8[:, i]), 4),
            "max_abs_diff": round(float(np.abs(fp32[:, i] - int8[:, i]).max()), 2),
        }
        for i, axis in enumerate(("iaa", "iqa", "ista"))
    }


def measure_package(package: Path, work: Path) -> dict:
    """Every acceptance number of the package in `package` (default variant unless said)."""
    scorer = Scorer(package, device="cpu")
    corpus = heldout_corpus()
    fit = json.loads((work / WORK_FILES["fit"]).read_text())
    dev_held = [p for p, _, held in dev_photos() if held]
    result = {
        "measured_with": "perceptlite.Scorer on the package's default variant (the runtime's decode, crops and resize)",
        "human": {**human_agreement(scorer), "cv_5fold_train_part": fit["cv_5fold_train_part"]},
        "ladders": {
            "photos": list(EVAL_WALLPAPERS[:LADDER_PHOTOS]),
            "spearman_level_vs_iqa": size_ladders(scorer, EVAL_WALLPAPERS[:LADDER_PHOTOS]),
        },
        "size_drift": size_drift(scorer, EVAL_WALLPAPERS[:LADDER_PHOTOS]),
        "aesthetics_and_structure": {**iaa_and_ista(scorer, corpus), **iaa_on_heldout_records(scorer, work)},
        "int8_vs_fp32": variant_agreement(package, dev_held[:80] + corpus[:40]),
        "files_mb": {p.name: round(p.stat().st_size / 1e6, 2) for p in sorted(package.glob("*.onnx"))},
        "targets": TARGETS,
    }
    return result
