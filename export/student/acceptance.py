"""The acceptance numbers of issue 3, measured on images held out from training.

Everything here scores through ONNX Runtime (the exported files the package ships), so the numbers
describe what users get. ``bench/student_acceptance.py`` prints them; ``export.student.distill package``
writes them into the manifest's ``fidelity`` and the model card.
"""

from __future__ import annotations

import os
import time
import zlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageFilter
from scipy.stats import spearmanr

from .label import read_records
from .network import AXES
from .onnx_export import onnx_session, run_onnx
from .splits import is_heldout
from .train import preprocess, record_image

TARGETS = {
    "iaa_srcc": 0.90,
    "iqa_srcc": 0.85,
    "iqa_ladder_trained": -0.90,
    "iqa_ladder_heldout": -0.75,
    "ista_srcc": 0.85,
    "ista_ladder": -0.85,
    "int8_vs_fp32_srcc": 0.99,
    "onnx_vs_torch_max_abs": 0.5,
    "model_mb": 20.0,
}
# Median filter sizes of the second (untrained) ista smoothing ladder.
MEDIAN_SIZES = (3, 5, 7, 9, 11)


def srcc(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation; 0.0 when either side is constant."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b)[0])


class OnnxStudent:
    """Scores PIL images with an exported student file: (N, 3) arrays on 0-100."""

    def __init__(self, path: str | Path, size: int, threads: int = 2):
        self.path, self.size = Path(path), size
        self.session = onnx_session(path, threads)

    def score(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, len(AXES)), np.float32)
        return run_onnx(self.session, np.stack([preprocess(im, self.size) for im in images]))


def heldout_records(label_files: Sequence[str | Path], limit: int | None = None) -> list[dict]:
    """Label records of held-out images, clean or distorted (deterministic order).

    Clean crops (`view` records) are left out, so that the numbers stay comparable across label files
    made with and without views.
    """
    records = [r for r in read_records(label_files) if is_heldout(r["source"]) and not r.get("view")]
    return records if limit is None else records[:limit]


def score_records(students: Sequence[OnnxStudent], records: Sequence[dict], batch: int = 16) -> list[np.ndarray]:
    """Scores of each student for the images of label records (each image is rebuilt once)."""
    outputs: list[list[np.ndarray]] = [[] for _ in students]
    for start in range(0, len(records), batch):
        images = [record_image(r) for r in records[start : start + batch]]
        for output, student in zip(outputs, students):
            output.append(student.score(images))
    return [np.concatenate(o) if o else np.zeros((0, len(AXES)), np.float32) for o in outputs]


def teacher_agreement(records: Sequence[dict], scores: np.ndarray) -> dict[str, dict]:
    """Per axis: SRCC of student vs teacher label, over the held-out records that carry that label."""
    result = {}
    for col, axis in enumerate(AXES):
        rows = [i for i, r in enumerate(records) if r.get(axis) is not None]
        result[axis] = {
            "srcc": srcc([records[i][axis] for i in rows], scores[rows, col]),
            "n": len(rows),
        }
    return result


def _ladder_seed(source: str, kind: str) -> int:
    return zlib.crc32(f"{Path(source).name}|{kind}".encode()) & 0x7FFFFFFF


def distortion_ladders(student: OnnxStudent, references: Sequence[dict], kinds: Sequence[str]) -> dict[str, float]:
    """Per kind: mean over references of Spearman(level, iqa score) across levels 1..5."""
    from .distortions import LEVELS, apply_distortion

    column = AXES.index("iqa")
    per_kind = {}
    for kind in kinds:
        values = []
        for reference in references:
            clean = record_image(reference)
            seed = _ladder_seed(reference["source"], kind)
            images = [apply_distortion(clean, kind, level, seed) for level in LEVELS]
            values.append(srcc(LEVELS, student.score(images)[:, column]))
        per_kind[kind] = float(np.mean(values))
    return per_kind


def median_smooth(image: Image.Image, level: int) -> Image.Image:
    """Edge-preserving smoothing the student never saw in training: a median filter, 3..11 px."""
    return image.filter(ImageFilter.MedianFilter(MEDIAN_SIZES[level - 1]))


def guided_smooth(image: Image.Image, level: int) -> Image.Image:
    """The teachers' edge-preserving smoothing (self-guided filter), levels 1..5."""
    from .distortions import apply_distortion

    return apply_distortion(image, "guided_smoothing", level, 0)


def smoothing_ladders(student: OnnxStudent, references: Sequence[dict], smoother) -> float:
    """Mean over references of Spearman(smoothing level, ista score), levels 1..5."""
    column = AXES.index("ista")
    levels = (1, 2, 3, 4, 5)
    values = []
    for reference in references:
        clean = record_image(reference)
        images = [smoother(clean, level) for level in levels]
        values.append(srcc(levels, student.score(images)[:, column]))
    return float(np.mean(values))


def inference_ms(path: str | Path, size: int, threads: int, repeats: int = 20) -> float:
    """Median milliseconds of one single-image ONNX Runtime call (after a warm-up)."""
    session = onnx_session(path, threads)
    pixels = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    run_onnx(session, pixels)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_onnx(session, pixels)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def measure(
    label_files: Sequence[str | Path],
    fp32_path: str | Path,
    int8_path: str | Path | None,
    size: int,
    ladder_images: int = 12,
    record_limit: int | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Every acceptance number, as a JSON-ready dict."""
    records = heldout_records(label_files, record_limit)
    if not records:
        raise SystemExit(f"{', '.join(map(str, label_files))}: no held-out records to measure on")
    fp32 = OnnxStudent(fp32_path, size)
    students = [fp32]
    if int8_path is not None and Path(int8_path).is_file():
        students.append(OnnxStudent(int8_path, size))
    log(f"scoring {len(records)} held-out label records")
    scores, *int8_scores = score_records(students, records)
    agreement = teacher_agreement(records, scores)
    clean = sorted((r for r in records if not r.get("distortion")), key=lambda r: r["source"])
    sources = clean[::max(1, len(clean) // ladder_images)][:ladder_images]
    from .distortions import HELDOUT_KINDS, TRAIN_KINDS

    log(f"distortion ladders on {len(sources)} held-out references")
    trained = distortion_ladders(fp32, sources, TRAIN_KINDS)
    heldout = distortion_ladders(fp32, sources, HELDOUT_KINDS)
    log("smoothing ladders")
    ista_ladder = smoothing_ladders(fp32, sources, guided_smooth)
    ista_ladder_median = smoothing_ladders(fp32, sources, median_smooth)
    result = {
        "measured_on": {
            "heldout_records": len(records),
            "heldout_sources": len({r["source"] for r in records}),
            "ladder_references": len(sources),
            "split": "sha256(file name) % 100 < 15 (export/student/splits.py)",
        },
        "iaa_srcc": agreement["iaa"]["srcc"],
        "iqa_srcc": agreement["iqa"]["srcc"],
        "ista_srcc": agreement["ista"]["srcc"],
        "labels_n": {axis: agreement[axis]["n"] for axis in AXES},
        "iqa_ladder_trained": float(np.mean(list(trained.values()))),
        "iqa_ladder_heldout": float(np.mean(list(heldout.values()))),
        "iqa_ladder_per_kind": {**trained, **heldout},
        "ista_ladder": ista_ladder,
        "ista_ladder_median": ista_ladder_median,
        "files": {},
    }
    variants = {"fp32": Path(fp32_path)}
    if int8_scores:
        variants["int8"] = Path(int8_path)
        quantised = int8_scores[0]
        result["int8_vs_fp32_srcc"] = {axis: srcc(scores[:, i], quantised[:, i]) for i, axis in enumerate(AXES)}
        result["int8_vs_fp32_max_abs"] = float(np.abs(scores - quantised).max())
    for variant, path in variants.items():
        result["files"][variant] = {
            "file": path.name,
            "mb": round(os.path.getsize(path) / 1e6, 2),
            "ms_1_thread": round(inference_ms(path, size, 1), 1),
            "ms_2_threads": round(inference_ms(path, size, 2), 1),
        }
    result["model_mb"] = max(entry["mb"] for entry in result["files"].values())
    return result


def verdicts(result: dict) -> list[tuple[str, str, str, bool]]:
    """(name, measured, target, passed) rows for printing."""
    rows = []

    def add(name: str, value: float, target: float, higher_is_better: bool) -> None:
        passed = value >= target if higher_is_better else value <= target
        rows.append((name, f"{value:.3f}", f"{'>=' if higher_is_better else '<='} {target}", passed))

    add("iaa student vs NIMA SRCC", result["iaa_srcc"], TARGETS["iaa_srcc"], True)
    add("iqa student vs pseudo-MOS SRCC", result["iqa_srcc"], TARGETS["iqa_srcc"], True)
    add("iqa ladders, trained kinds", result["iqa_ladder_trained"], TARGETS["iqa_ladder_trained"], False)
    add("iqa ladders, held-out kinds", result["iqa_ladder_heldout"], TARGETS["iqa_ladder_heldout"], False)
    add("ista student vs teacher SRCC", result["ista_srcc"], TARGETS["ista_srcc"], True)
    add("ista smoothing ladders (guided)", result["ista_ladder"], TARGETS["ista_ladder"], False)
    add("ista smoothing ladders (median)", result["ista_ladder_median"], TARGETS["ista_ladder"], False)
    for axis, value in result.get("int8_vs_fp32_srcc", {}).items():
        add(f"int8 vs fp32 SRCC ({axis})", value, TARGETS["int8_vs_fp32_srcc"], True)
    if "onnx_vs_torch_max_abs" in result:
        add("ONNX vs torch max abs diff", result["onnx_vs_torch_max_abs"], TARGETS["onnx_vs_torch_max_abs"], False)
    add("largest model file (MB)", result["model_mb"], TARGETS["model_mb"], False)
    return rows


def format_report(result: dict) -> str:
    """A plain-text table of every number and whether it meets its target."""
    lines = [f"{'measure':36} {'value':>9}  {'target':>9}  ok"]
    for name, value, target, passed in verdicts(result):
        lines.append(f"{name:36} {value:>9}  {target:>9}  {'yes' if passed else 'NO'}")
    for kind, value in result.get("iqa_ladder_per_kind", {}).items():
        lines.append(f"  ladder {kind:28} {value:>9.3f}")
    for variant, entry in result.get("files", {}).items():
        lines.append(
            f"{variant}: {entry['file']} {entry['mb']} MB, single image {entry['ms_1_thread']} ms (1 thread), "
            f"{entry['ms_2_threads']} ms (2 threads)"
        )
    lines.append(f"measured on: {result['measured_on']}")
    return "\n".join(lines)
