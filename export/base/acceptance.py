"""What users get from a written package, measured through `perceptlite.Scorer` (the runtime's decode and crops).

- `ladders`: per kind and size, the mean over held-out professional photos of Spearman(damage level, iqa);
- `clean`: those photos' clean iqa at 500 px, 1,000 px and their own size, and how far one photo moves;
- `variants`: int8 against fp32 on every axis;
- `whole_view`: iaa and ista against the source package (the recipe copies the whole view unchanged);
- `iaa_vs_nima`: iaa against NIMA on the held-out corpus photos' clean and distorted label records, 0.1.0's
  acceptance protocol (the records are labelled once into the work folder, resumably).
People's agreement is not measured here: every rated photo trains the shipped network, so the only
honest number is the cross-validation (`iqa-cv`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from export.common.size_ladders import LADDER_LEVELS, damage, resize_long_side
from perceptlite import Scorer
from perceptlite.datasets.metrics import srcc

LADDER_SIZES = (500, 1500, 4000)
CLEAN_SIZES = (500, 1000)
# The kinds: the runtime's ladders plus sensor-like noise (sigma at mid grey) and defocus (disc radius, px).
ACCEPTANCE_LADDERS = {**LADDER_LEVELS, "sensor_noise": (3, 6, 12, 24, 40), "defocus": (1, 2, 3, 5, 8)}
TARGETS = {"ladder_spearman_max": -0.85, "clean_median_min": 70.0, "clean_drift_max": 5.0}


def _iqa(scorer: Scorer, images: Sequence[Image.Image]) -> np.ndarray:
    return np.array([scorer.score(image).iqa for image in images], dtype=np.float64)


def _falling(levels: np.ndarray, iqa: np.ndarray) -> float:
    """Spearman of level vs iqa; a ladder iqa does not move along counts as 0 (it did not fall)."""
    value = srcc(levels, iqa)
    return 0.0 if np.isnan(value) else value


def ladder_image(image: Image.Image, kind: str, level: int, seed: str) -> Image.Image:
    if level == 0:
        return image
    rng = np.random.default_rng(zlib.crc32(f"{seed}|{kind}|{level}".encode()))
    return damage(image, kind, ACCEPTANCE_LADDERS[kind][level - 1], rng)


def ladders(scorer: Scorer, photos: Sequence[Path], sizes: Sequence[int] = LADDER_SIZES, log: Callable[[str], None] = print) -> dict:
    """{kind: {size: mean per-photo Spearman(level, iqa)}}, and each photo's iqa per level."""
    per_kind: dict[str, dict[str, list[float]]] = {kind: {str(s): [] for s in sizes} for kind in ACCEPTANCE_LADDERS}
    for size in sizes:
        for path in photos:
            with Image.open(path) as source:
                image = resize_long_side(source, size)
            for kind, levels in ACCEPTANCE_LADDERS.items():
                steps = range(len(levels) + 1)
                iqa = _iqa(scorer, [ladder_image(image, kind, level, path.name) for level in steps])
                per_kind[kind][str(size)].append(_falling(np.array(steps, float), iqa))
        log(f"  ladders at {size} px: " + ", ".join(f"{k} {np.mean(v[str(size)]):.2f}" for k, v in per_kind.items()))
    return {kind: {size: round(float(np.mean(v)), 3) for size, v in by_size.items()} for kind, by_size in per_kind.items()}


def photo_name(path: Path) -> str:
    """A photo's name: plasma wallpapers are folders of sizes (Path/contents/images/2560x1600.jpg), Lomiri's are files."""
    return path.parents[2].name if path.parent.name == "images" and path.parent.parent.name == "contents" else path.stem


def clean_photos(scorer: Scorer, photos: Sequence[Path], sizes: Sequence[int] = CLEAN_SIZES) -> dict:
    """Clean iqa of each photo at each size and its own; the medians and the largest move from 500 px to its own size."""
    per_photo = {}
    for path in photos:
        with Image.open(path) as source:
            native = source.convert("RGB")
        views = {str(size): resize_long_side(native, size) for size in sizes} | {"native": native}
        per_photo[photo_name(path)] = {key: round(float(v), 1) for key, v in zip(views, _iqa(scorer, list(views.values())))}
    keys = [*map(str, sizes), "native"]
    drift = {name: round(abs(v["native"] - v[str(sizes[0])]), 1) for name, v in per_photo.items()}
    return {
        "median_iqa": {key: round(float(np.median([v[key] for v in per_photo.values()])), 1) for key in keys},
        "max_move_500_to_native": max(drift.values()),
        "per_photo": per_photo,
    }


def variant_agreement(package: Path, paths: Sequence[Path]) -> dict:
    scores = {}
    for variant in ("fp32", "int8"):
        results = list(Scorer(package, device="cpu", variant=variant).score_many([str(p) for p in paths]))
        scores[variant] = np.array([(r.iaa, r.iqa, r.ista) for r in results], dtype=np.float64)
    fp32, int8 = scores["fp32"], scores["int8"]
    return {
        axis: {"srcc": round(srcc(fp32[:, i], int8[:, i]), 4), "max_abs_diff": round(float(np.abs(fp32[:, i] - int8[:, i]).max()), 2)}
        for i, axis in enumerate(("iaa", "iqa", "ista"))
    }


def whole_view_agreement(package: Path, source: Path, paths: Sequence[Path]) -> dict:
    """Largest difference in iaa and ista between the package and the source package it took the whole view from (int8)."""
    new = list(Scorer(package, device="cpu").score_many([str(p) for p in paths]))
    old = list(Scorer(source, device="cpu").score_many([str(p) for p in paths]))
    return {axis: round(max(abs(getattr(a, axis) - getattr(b, axis)) for a, b in zip(new, old)), 4) for axis in ("iaa", "ista")} | {
        "images": len(paths)
    }


def iaa_vs_nima(scorer: Scorer, labels: Path, photos: int | None = None) -> dict:
    """SRCC of iaa vs NIMA over the held-out corpus photos' clean and distorted records (4 distortions each,
    seed 0, long side 512: 0.1.0's labelling), labelled into `labels` (resumed) with the first `photos` only."""
    from export.common.splits import is_heldout
    from export.distill.label import iter_samples, label_samples, read_records, sample_image
    from export.teachers.nima import NimaTeacher

    from .photos import CORPUS

    samples = [s for s in iter_samples([CORPUS], distortions_per_image=4, seed=0) if is_heldout(s.source)]
    sources = sorted({s.source for s in samples})[:photos]
    samples = [s for s in samples if s.source in set(sources)]
    label_samples(samples, [NimaTeacher()], labels, max_side=512)
    wanted = {s.key for s in samples}
    records = [r for r in read_records(labels) if r["key"] in wanted]
    iaa = [scorer.score(sample_image(r)).iaa for r in records]
    return {"srcc": round(srcc(np.array(iaa), np.array([r["iaa"] for r in records])), 4), "records": len(records), "photos": len(sources)}


def iaa_and_ista(scorer: Scorer, photos: int | None = None) -> dict:
    """0.5.0's whole-view checks on this package: iaa vs NIMA and iaa's quartiles on the held-out corpus photos,
    ista along median-smoothing and noise ladders (export.wholeview.acceptance)."""
    from export.wholeview.acceptance import heldout_corpus
    from export.wholeview.acceptance import iaa_and_ista as whole_view_checks

    return whole_view_checks(scorer, heldout_corpus()[:photos])


def measure(
    package: Path,
    source: Path | None,
    eval_photos: Sequence[Path],
    dev_paths: Sequence[Path],
    sizes: Sequence[int] = LADDER_SIZES,
    log: Callable[[str], None] = print,
) -> dict:
    """Every acceptance number of the package in `package` (its default variant unless said)."""
    scorer = Scorer(package, device="cpu")
    result = {
        "measured_with": "perceptlite.Scorer on the package's default variant (the runtime's decode, crops and resize)",
        "eval_photos": [photo_name(p) for p in eval_photos],
        "ladders": ladders(scorer, eval_photos, sizes, log),
        "clean": clean_photos(scorer, eval_photos),
        "int8_vs_fp32": variant_agreement(package, dev_paths),
        "files_mb": {p.name: round(p.stat().st_size / 1e6, 2) for p in sorted(package.glob("*.onnx"))},
        "targets": TARGETS,
    }
    if source is not None:
        result["whole_view_vs_source"] = whole_view_agreement(package, source, dev_paths)
    return result
