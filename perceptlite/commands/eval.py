"""`perceptlite eval VR.json --images DIR`: SRCC / KRCC / PLCC of a model against a Visual Rating file.

A VR file is a JSON list of ``{"image": "<path relative to --images>", "gt_score": <number>}`` (UniPercept-Bench's
format; any scale). The table has one row per file and axis, like the paper's Table 1. Images that are missing
or fail to decode are left out of the correlations and counted in the table.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import click

from ..errors import PerceptliteError
from ..manifest import ModelPackageError
from ..metrics import Agreement, agreement

AXES = ("iaa", "iqa", "ista")
EXIT_OK, EXIT_USAGE = 0, 2


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

    def as_dict(self) -> dict:
        metrics = self.result.as_dict() if self.result else {"count": 0}
        return {"dataset": self.dataset, "axis": self.axis, "failed": self.failed, **metrics}


def load_vr(path: str | Path) -> list[VrItem]:
    """Read a VR-format JSON list of {"image", "gt_score"}; raises VrFileError with a one-line message."""
    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
        items = [VrItem(str(r["image"]), float(r["gt_score"])) for r in records]
    except OSError as exc:
        raise VrFileError(f"{path}: cannot read it ({exc.strerror or exc}); pass a VR JSON file") from None
    except (ValueError, TypeError, KeyError):
        raise VrFileError(f"{path}: not a JSON list of {{\"image\", \"gt_score\"}} records (UniPercept VR format)") from None
    if not items:
        raise VrFileError(f"{path}: has no records")
    return items


def evaluate(
    vr_files: Sequence[Path], images: Path, axes: Sequence[str], score: Callable[[list[Path]], Iterable[dict | None]]
) -> list[EvalRow]:
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


def _package_scorer(model, device, threads, variant, batch_size):
    from ..scorer import Scorer

    scorer = Scorer(model, device=device, threads=threads, variant=variant, batch_size=batch_size)

    def score(paths: list[Path]):
        for result in scorer.score_many([str(p) for p in paths]):
            yield {axis: getattr(result, axis) for axis in AXES} if result.ok else None

    return scorer, score


@click.command("eval")
@click.argument("vr_files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--images", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="Folder the VR files' image paths are relative to.")
@click.option("-m", "--model", default=None, metavar="NAME|FOLDER", help="Model package: a bundled name or a folder [default: the bundled default].")
@click.option("--axis", "axes", type=click.Choice(AXES + ("all",)), multiple=True, default=("all",), show_default=True, help="Axis to correlate with gt_score (repeat; 'all' = iaa, iqa and ista).")
@click.option("--variant", default=None, help="Weight variant of the package, e.g. fp32 or int8 [default: the package's].")
@click.option("--device", type=click.Choice(("auto", "cpu", "cuda")), default="auto", show_default=True, help="Where to run the model.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Inference threads [default: all cores].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Images per inference batch [default: the backend's].")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON instead of a table.")
def command(vr_files, images, model, axes, variant, device, threads, batch_size, as_json):
    """Correlate a model's scores with the ground truth of Visual Rating files (SRCC, KRCC, PLCC)."""
    axes = AXES if "all" in axes else tuple(dict.fromkeys(axes))
    try:
        scorer, score = _package_scorer(model, device, threads, variant, batch_size)
        rows = evaluate(vr_files, images, axes, score)
    except (PerceptliteError, ModelPackageError) as exc:
        click.echo(f"perceptlite: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    if as_json:
        click.echo(json.dumps([row.as_dict() for row in rows], indent=2))
    else:
        click.echo(format_table(rows, f"model: {scorer.package.name} {scorer.package.version} ({scorer.package.backend})"))
    sys.exit(EXIT_OK)
