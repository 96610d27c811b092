"""A no-reference teacher (UniPercept) as a second, weaker source of iqa targets for the crop head.

    python -m export.wholeview teacher --student STUDENT --work WORK --teacher unipercept:CKPT [--teacher-images N]
    python -m export.wholeview fit --work WORK --teacher-weight 0.5

The teacher rates each photo as it was built to: its own 448 x 448 view of the whole image (UniPercept
stretches the whole picture to 448 px; the scores of the three axes come from one image encoding). The
crop head sees something else: the mean of the student's block statistics over its native-resolution 224-px
crops. The two meet at the image level, exactly as a human opinion score does: a person also rates the
whole photo once, and the head's pooled crop features are fitted to that one number. So a teacher label
is the target of the mean-pooled crops of the same photo, like a MOS, never a label of a crop.

The step writes, in the work folder:
  teacher_labels.jsonl      the teacher's scores of the unrated photos (default: the training split of
                            ../shared/corpus, export/common/splits.py), in export.distill.label's format;
                            resumed, never recomputed, when the step runs again
  teacher_dev_labels.jsonl  the teacher's scores of the dev photos' training part (never the held-out
                            part): the photos rated by both people and the teacher, used only to map the
                            teacher's 0-100 onto the MOS scale
  teacher_features.npz      per-crop features [N, crops, D] of the unrated photos, keyed like the labels

`fit` then adds `teacher_weight * mean (head(x_teacher) - map(teacher_iqa))^2` to its loss, where map
is a monotone (isotonic, least squares) fit of MOS on the teacher's iqa over the photos rated by both
(at least MIN_MAPPED_PHOTOS of them; otherwise the identity). Human scores stay the truth: they set the
cross-validation, the weight decay, the held-out report and the scale; the teacher only adds photos.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from export.common.splits import is_heldout
from export.distill.label import Sample, iter_samples, label_samples, read_records
from perceptlite.images.decode import decode_file

from .config import WORK_FILES

if TYPE_CHECKING:
    from .features import FeatureSession

TEACHER_LABELS = WORK_FILES["teacher_labels"]
TEACHER_DEV_LABELS = WORK_FILES["teacher_dev_labels"]
TEACHER_FEATURES = WORK_FILES["teacher_features"]
DEFAULT_TEACHER_WEIGHT = 0.5
MIN_MAPPED_PHOTOS = 10  # photos rated by both below which the teacher's scale is taken as is
NATIVE = 0  # export.distill.label's max_side for "decode at full size": the teacher makes its own 448-px view
SAVE_EVERY = 100  # photos between two writes of the feature cache (an interrupted step resumes from there)


def load_iqa_teacher(spec: str):
    """The teacher named by `spec` (export.teachers.load_teacher), if it rates iqa without a reference."""
    from export.teachers import load_teacher

    teacher = load_teacher(spec)
    if "iqa" not in teacher.axes or getattr(teacher, "full_reference", False):
        raise ValueError(f"teacher {spec!r} does not rate iqa from the photo alone; pass unipercept:<checkpoint folder>")
    return teacher


def unrated_samples(roots: Sequence[Path], limit: int | None = None) -> list[Sample]:
    """The training-split photos under `roots` (sorted, the first `limit`), one clean sample each."""
    samples = [s for s in iter_samples(roots, distortions_per_image=0) if not is_heldout(s.source)]
    return samples[:limit] if limit is not None else samples


def dev_samples(photos: Sequence[tuple[Path, float, bool]]) -> list[Sample]:
    """One clean sample per dev photo of the training part (the held-out part is never shown to the teacher)."""
    return [Sample(str(path.parent), path.name, None) for path, _, held in photos if not held]


def label_with_teacher(teacher, samples: Sequence[Sample], out: Path) -> dict:
    """Teacher scores of every sample not yet in `out` (export.distill.label's resumable writer)."""
    return label_samples(list(samples), [teacher], out, NATIVE)


def cache_teacher_features(session: FeatureSession, records: Sequence[dict], out: Path) -> dict:
    """Per-crop features of each labelled photo, keyed by its label key; keys already in `out` are kept."""
    from .features import save_npz

    keys, features = [], []
    if out.is_file():
        cached = np.load(out)
        keys, features = cached["keys"].tolist(), list(cached["features"])
    known = set(keys)
    todo = [r for r in records if r["key"] not in known]
    for done, record in enumerate(tqdm(todo, desc="teacher photos", unit="img"), 1):
        keys.append(record["key"])
        features.append(session.crop_features(decode_file(Path(record["root"]) / record["source"]).image))
        if done % SAVE_EVERY == 0 or done == len(todo):
            save_npz(out, keys=np.array(keys), features=np.stack(features))
    return {"photos": len(keys), "computed": len(todo)}


def teacher_step(
    teacher, session: FeatureSession, work: Path, roots: Sequence[Path], limit: int | None, dev: Sequence[tuple[Path, float, bool]] = ()
) -> dict:
    """With a teacher from `load_iqa_teacher`: label the unrated photos (and the dev training photos, for the
    mapping), then cache the unrated ones' crop features."""
    counts = {"unrated": label_with_teacher(teacher, unrated_samples(roots, limit), work / TEACHER_LABELS)}
    if dev:
        counts["dev"] = label_with_teacher(teacher, dev_samples(dev), work / TEACHER_DEV_LABELS)
    counts["features"] = cache_teacher_features(session, read_records(work / TEACHER_LABELS), work / TEACHER_FEATURES)
    counts["teacher"] = teacher.describe()
    (work / WORK_FILES["teacher_summary"]).write_text(json.dumps(counts, indent=2) + "\n")
    return counts


def monotone_map(teacher: np.ndarray, mos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots (teacher score, MOS) of the least-squares non-decreasing fit of MOS on the teacher's score,
    read linearly between knots (np.interp); only the two ends of each flat run are kept."""
    from scipy.optimize import isotonic_regression

    xs, inverse, counts = np.unique(np.asarray(teacher, float), return_inverse=True, return_counts=True)
    means = np.bincount(inverse, weights=np.asarray(mos, float)) / counts
    ys = isotonic_regression(means, weights=counts.astype(float), increasing=True).x
    padded = np.concatenate([[np.nan], ys, [np.nan]])
    keep = (padded[1:-1] != padded[:-2]) | (padded[1:-1] != padded[2:])
    return xs[keep], ys[keep]


def teacher_term(
    work: Path, dev_names: np.ndarray, dev_mos: np.ndarray, dev_held: np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """(per-crop features [N, crops, D], targets on the MOS scale [N], summary) of the teacher's photos, or
    None when the work folder holds no teacher labels."""
    from perceptlite.datasets.metrics import srcc as spearman

    records = {r["key"]: r for r in read_records(work / TEACHER_LABELS, missing_ok=True) if r.get("iqa") is not None}
    if not records or not (work / TEACHER_FEATURES).is_file():
        return None
    cached = np.load(work / TEACHER_FEATURES)
    rows = [i for i, key in enumerate(cached["keys"].tolist()) if key in records]
    raw = np.array([records[key]["iqa"] for key in cached["keys"][rows].tolist()], float)
    mos_of = {str(name): float(m) for name, m, held in zip(dev_names, dev_mos, dev_held) if not held}
    both = [
        (float(r["iqa"]), mos_of[Path(r["source"]).name])
        for r in read_records(work / TEACHER_DEV_LABELS, missing_ok=True)
        if r.get("iqa") is not None and Path(r["source"]).name in mos_of
    ]
    summary = {"photos": len(rows), "raw_quartiles": np.percentile(raw, [25, 50, 75]).round(2).tolist() if len(raw) else []}
    if len(both) >= MIN_MAPPED_PHOTOS:
        pairs = np.array(both)
        xs, ys = monotone_map(pairs[:, 0], pairs[:, 1])
        targets = np.interp(raw, xs, ys)
        srcc = spearman(pairs[:, 0], pairs[:, 1])
        summary["mapping"] = {
            "kind": "isotonic fit of MOS on the teacher's iqa (photos rated by both)",
            "photos_rated_by_both": len(both),
            "teacher_vs_mos_srcc": None if np.isnan(srcc) else round(float(srcc), 4),
            "knots": np.round(np.stack([xs, ys], axis=1), 2).tolist(),
        }
    else:
        targets = raw
        summary["mapping"] = {
            "kind": f"identity (fewer than {MIN_MAPPED_PHOTOS} photos rated by both)",
            "photos_rated_by_both": len(both),
        }
    summary["target_quartiles"] = np.percentile(targets, [25, 50, 75]).round(2).tolist() if len(targets) else []
    return cached["features"][rows], targets.astype(np.float64), summary
