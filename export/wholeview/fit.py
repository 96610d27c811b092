"""Fit the iqa head: human opinion scores, plus a ranking term that keeps distortion ladders falling.

The head is a one-hidden-layer MLP on standardised crop features (export/wholeview/model.py's IqaHead). Its loss is

    mean (pred - mos)^2  +  alpha / n * |weights|^2  +  rank_weight * mean over ladder steps of relu(margin - (s_better - s_worse))^2
        +  teacher_weight * mean over the teacher's photos of (pred - map(teacher iqa))^2

where a ladder step is two adjacent levels (clean -> 1 -> ... -> 5) of one kind on one photo at one
size. Human scores set the scale and the ranking of real photos; the ladders teach the head that
more noise, blur, compression or resampling never scores higher, including far past what the rated
photos show. alpha is chosen by 5-fold cross-validation on the training part of the dev photos.
The teacher term (export/wholeview/teacher.py; off without teacher labels or at weight 0) adds
unrated photos whose targets are a teacher's image-level iqa mapped onto the MOS scale.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from export.common.errors import FactoryError
from perceptlite.datasets.metrics import plcc, srcc

from .config import RANK_WEIGHT, WORK_FILES
from .model import CROP_CELLS, IQA_FEATURES, IqaHead

ALPHAS = (300.0, 1000.0, 3000.0, 10000.0)
MARGIN = 2.0  # MOS points between adjacent ladder levels
FOLDS = 5


def pooled(features: np.ndarray) -> np.ndarray:
    """Per-crop cached features [N, crops, D] -> the mean over the crops [N, D], as the model pools them."""
    if features.ndim != 3 or features.shape[1:] != (len(CROP_CELLS), IQA_FEATURES):
        raise FactoryError(
            f"a feature cache of shape {features.shape} is not [images, {len(CROP_CELLS)} crops, {IQA_FEATURES}]: it was made for another model; delete it and re-run `features`"
        )
    return features.mean(axis=1)


def ladder_steps(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """All ladder features [M, D] and their adjacent-level pairs [P, 2] (better, worse) as row indices."""
    blocks, pairs, offset = [], [], 0
    for path in sorted(folder.glob("*.npz")):
        data = np.load(path)
        kinds, levels = data["kinds"], data["levels"]
        for kind in sorted(set(kinds.tolist()) - {-1}):
            rows = [0] + sorted(np.flatnonzero(kinds == kind).tolist(), key=lambda r: levels[r])
            pairs += [(offset + a, offset + b) for a, b in zip(rows, rows[1:])]
        blocks.append(pooled(data["features"]))
        offset += len(data["features"])
    if not blocks:
        return np.zeros((0, IQA_FEATURES), np.float32), np.zeros((0, 2), int)
    return np.concatenate(blocks), np.asarray(pairs, dtype=int)


def train_head(
    x: np.ndarray,
    y: np.ndarray,
    ladder: np.ndarray,
    pairs: np.ndarray,
    alpha: float,
    rank_weight: float,
    mean: np.ndarray,
    std: np.ndarray,
    seed: int = 0,
    teacher: tuple[np.ndarray, np.ndarray, float] | None = None,
) -> IqaHead:
    """Minimise the loss of the module doc with L-BFGS (full batch; the initial weights fixed by `seed`);
    `teacher` is (pooled features, targets on the MOS scale, weight) of the teacher term, or None."""
    torch.manual_seed(seed)
    head = IqaHead(x.shape[1])
    with torch.no_grad():
        head.feature_mean.copy_(torch.from_numpy(mean))
        head.feature_std.copy_(torch.from_numpy(std))
        head.net[-1].bias.fill_(float(y.mean()))
    xs, ys = torch.from_numpy(x).float(), torch.from_numpy(y).float()
    ls = torch.from_numpy(ladder).float() if len(pairs) else None
    better, worse = (torch.from_numpy(pairs[:, 0]), torch.from_numpy(pairs[:, 1])) if len(pairs) else (None, None)
    use_teacher = teacher is not None and teacher[2] > 0 and len(teacher[1]) > 0
    xt, yt = (torch.from_numpy(teacher[0]).float(), torch.from_numpy(teacher[1]).float()) if use_teacher else (None, None)
    weights = [p for name, p in head.net.named_parameters() if name.endswith("weight")]
    optimiser = torch.optim.LBFGS(head.net.parameters(), lr=1.0, max_iter=300, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = ((head(xs) - ys) ** 2).mean() + alpha / len(y) * sum((w * w).sum() for w in weights)
        if ls is not None and rank_weight > 0:
            scores = head(ls)
            loss = loss + rank_weight * (torch.relu(MARGIN - (scores[better] - scores[worse])) ** 2).mean()
        if use_teacher:
            loss = loss + teacher[2] * ((head(xt) - yt) ** 2).mean()
        loss.backward()
        return loss

    optimiser.step(closure)
    return head.eval()


def predict(head: IqaHead, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return np.clip(head(torch.from_numpy(x.astype(np.float32))).numpy(), 0, 100)


def agreement(pred: np.ndarray, mos: np.ndarray) -> dict:
    return {
        "srcc": round(srcc(pred, mos), 4),
        "plcc": round(plcc(pred, mos, fit=False), 4),
        "mae": round(float(np.abs(pred - mos).mean()), 2),
        "images": int(len(mos)),
    }


def ladder_order(head: IqaHead, ladder: np.ndarray, pairs: np.ndarray) -> float:
    """Share of adjacent ladder steps whose score does not rise."""
    if not len(pairs):
        return float("nan")
    scores = predict(head, ladder)
    return float(np.mean(scores[pairs[:, 0]] >= scores[pairs[:, 1]]))


def cross_validate(x, y, ladder, pairs, alpha, rank_weight, teacher=None) -> np.ndarray:
    """Out-of-fold predictions (folds by position, fixed); the teacher term, if any, joins every fold's training."""
    folds = np.arange(len(y)) % FOLDS
    out = np.zeros(len(y))
    for fold in range(FOLDS):
        train = folds != fold
        mean, std = _standardisation(x[train])
        out[~train] = predict(train_head(x[train], y[train], ladder, pairs, alpha, rank_weight, mean, std, teacher=teacher), x[~train])
    return out


def _standardisation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(axis=0), x.std(axis=0) + 1e-6


def fit_iqa_head(
    work: Path, rank_weight: float = RANK_WEIGHT, teacher_weight: float | None = None, alphas: tuple[float, ...] = ALPHAS
) -> dict:
    """Choose alpha among `alphas` by cross-validation, fit on the whole training part, save WORK/iqa_head.pt + fit.json.
    With teacher labels in WORK (export/wholeview/teacher.py), their term joins at `teacher_weight`."""
    from .teacher import DEFAULT_TEACHER_WEIGHT, teacher_term

    teacher_weight = DEFAULT_TEACHER_WEIGHT if teacher_weight is None else teacher_weight
    dev = np.load(work / WORK_FILES["dev_features"])
    x, y, held = pooled(dev["features"]).astype(np.float64), dev["mos"].astype(np.float64), dev["heldout"].astype(bool)
    ladder, pairs = ladder_steps(work / WORK_FILES["ladders"])
    ladder = ladder.astype(np.float64)
    x_train, y_train = x[~held], y[~held]
    found = teacher_term(work, dev["names"], dev["mos"], held)
    teacher = (pooled(found[0]).astype(np.float64), found[1], teacher_weight) if found and teacher_weight > 0 and len(found[1]) else None
    cv = {}
    for alpha in alphas:
        cv[alpha] = agreement(cross_validate(x_train, y_train, ladder, pairs, alpha, rank_weight, teacher), y_train)
    best = max(alphas, key=lambda a: cv[a]["srcc"])
    # Without ladders the ranking term is already absent.
    without_ranking = agreement(cross_validate(x_train, y_train, ladder, pairs, best, 0.0, teacher), y_train) if len(pairs) else cv[best]
    mean, std = _standardisation(x_train)
    head = train_head(x_train, y_train, ladder, pairs, best, rank_weight, mean, std, teacher=teacher)
    torch.save(head.state_dict(), work / WORK_FILES["iqa_head"])
    summary = {
        "alpha": best,
        "rank_weight": rank_weight,
        "train_images": int((~held).sum()),
        "heldout_images": int(held.sum()),
        "ladder_rows": int(len(ladder)),
        "ladder_steps": int(len(pairs)),
        "cv_5fold_train_part": cv[best],
        "cv_5fold_without_ranking": without_ranking,
        "cv_by_alpha": {str(a): cv[a] for a in alphas},
        "heldout_features": agreement(predict(head, x[held]), y[held]),
        "training_ladder_steps_in_order": round(ladder_order(head, ladder, pairs), 4),
        "teacher": None,
    }
    if found:
        summary["teacher"] = {
            **found[2],
            "weight": teacher_weight,
            "term": "teacher_weight * mean (pred - mapped teacher iqa)^2" if teacher else "off",
        }
        if teacher:
            summary["teacher"]["cv_5fold_without_teacher"] = agreement(
                cross_validate(x_train, y_train, ladder, pairs, best, rank_weight), y_train
            )
    (work / WORK_FILES["fit"]).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def load_iqa_head(work: Path) -> IqaHead:
    head = IqaHead()
    head.load_state_dict(torch.load(work / WORK_FILES["iqa_head"], map_location="cpu", weights_only=True))
    return head.eval()
