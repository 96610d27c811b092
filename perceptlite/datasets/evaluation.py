"""Agreement of a scorer with Visual Rating files: SRCC / KRCC / PLCC per file and axis (``perceptlite eval``,
``python -m export.evaluate``).

A VR file is a JSON list of ``{"image": "<path relative to the images folder>", "gt_score": <number>}``
(UniPercept-Bench's format; any scale). The table has one row per file and axis, like the paper's Table 1.
Images that are missing or fail to decode are left out of the correlations and counted in the table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PerceptliteError
from .metrics import Agreement, agreement

if TYPE_CHECKING:
    from ..scorer import Scorer

ScoreFunction = Callable[[list[Path]], Iterable["dict[str, float | None] | None"]]


class VrFileError(PerceptliteError):
    """A VR file that cannot be read or has the wrong shape."""


@dataclass(frozen=True)
class VrItem:
    image: str
    gt_score: float


@dataclass(frozen=True)
class EvalRow:
    dataset: str
    axis: str
    failed: int
    result: Agreement | None  # None when fewer than two images were scored

    def as_dict(self) -> dict[str, Any]:
        metrics = self.result.as_dict() if self.result else {"count": 0}
        return {"dataset": self.dataset, "axis": self.axis, "failed": self.failed, **metrics}


def load_vr(path: str | Path) -> list[VrItem]:
    """Read a VR-format JSON list of {"image", "gt_score"}; raises VrFileError with a one-line message."""
    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
        items = [VrItem(str(r["image"]), _ground_truth(r["gt_score"], path, number)) for number, r in enumerate(records, 1)]
    except VrFileError:
        raise
    except OSError as exc:
        raise VrFileError(f"{path}: cannot read it ({exc.strerror or exc}); pass a VR JSON file") from None
    except (ValueError, TypeError, KeyError, OverflowError, RecursionError):
        raise VrFileError(f'{path}: not a JSON list of {{"image", "gt_score"}} records (UniPercept VR format)') from None
    if not items:
        raise VrFileError(f"{path}: has no records")
    return items


def _ground_truth(value: Any, path: Path, number: int) -> float:
    """A record's gt_score as a finite number: a NaN or infinite one would silently change the SRCC."""
    try:
        score = float(value) if not isinstance(value, bool) and isinstance(value, (int, float, str)) else math.nan
    except OverflowError:  # an integer beyond float range
        score = math.inf
    if not math.isfinite(score):
        raise VrFileError(
            f"{path}: record {number} has gt_score {value!r}; ground truth must be a finite number (fix or remove the record)"
        )
    return score


def evaluate(vr_files: Sequence[Path], images: Path, axes: Sequence[str], score: ScoreFunction) -> list[EvalRow]:
    """Score every file's images with `score` (paths -> one {axis: value} or None per path) and correlate."""
    rows = []
    for vr_file in vr_files:
        items = load_vr(vr_file)
        predictions = list(score([images / item.image for item in items]))
        for axis in axes:
            pairs = [(p[axis], item.gt_score) for p, item in zip(predictions, items) if p and p.get(axis) is not None]
            result = agreement([a for a, _ in pairs], [b for _, b in pairs]) if len(pairs) >= 2 else None
            rows.append(EvalRow(Path(vr_file).stem, axis, len(items) - len(pairs), result))
    return rows


def format_table(rows: Sequence[EvalRow], title: str = "") -> str:
    """A paper-like table: dataset, axis, images, SRCC, KRCC, PLCC (logistic-fitted)."""
    width = max([len("dataset")] + [len(r.dataset) for r in rows])
    lines = [title] if title else []
    lines.append(f"{'dataset':<{width}}  axis   images  failed   SRCC    KRCC    PLCC")
    for row in rows:
        if row.result is None:
            lines.append(f"{row.dataset:<{width}}  {row.axis:<5}  {0:>6}  {row.failed:>6}      -       -       -")
            continue
        r = row.result
        mark = "" if r.logistic_fit else "*"
        lines.append(
            f"{row.dataset:<{width}}  {row.axis:<5}  {r.count:>6}  {row.failed:>6}  {r.srcc:6.3f}  {r.krcc:6.3f}  {r.plcc:6.3f}{mark}"
        )
    if any(row.result and not row.result.logistic_fit for row in rows):
        lines.append("* PLCC without the logistic fit (install scipy, or the fit did not converge)")
    return "\n".join(lines)


def scorer_scores(scorer: Scorer) -> Callable[[list[Path]], Iterator[dict[str, float | None] | None]]:
    """A paths -> {axis: score} function (None for an image that failed) backed by a Scorer."""

    def score(paths: list[Path]) -> Iterator[dict[str, float | None] | None]:
        for result in scorer.score_many([str(p) for p in paths]):
            yield result.scores() if result.ok else None

    return score
