"""Feature caches for the quality head: crops of rated photos and of distortion ladders.

Crops are cut exactly as the runtime cuts them (perceptlite.images.decode + perceptlite.backends.preprocess), and
run through the student's feature extractor with ONNX Runtime. Every cache is a file in the work
folder, written atomically, so an interrupted step resumes where it stopped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from export.common.size_ladders import LADDER_KINDS, LADDER_LEVELS, ladder_image, resize_long_side
from perceptlite.backends.preprocess import prepare_crops
from perceptlite.images.decode import decode_file
from perceptlite.records.publish import atomic_output

from .config import WORK_FILES
from .model import IQA_FEATURES, export_features_onnx, input_spec, load_student_weights


class FeatureSession:
    """The student's feature extractor in ONNX Runtime."""

    def __init__(self, onnx_path: Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.spec = input_spec()

    def run(self, pixels: np.ndarray, output: str) -> np.ndarray:
        return self.session.run([output], {"pixels": pixels.astype(np.float32)})[0]

    def crop_features(self, image: Image.Image) -> np.ndarray:
        """Every block's statistics for each crop: [crops, IQA_FEATURES] (the model averages them)."""
        return self.run(prepare_crops(image, self.spec), "blocks")


def feature_session(student: Path, work: Path) -> FeatureSession:
    """Export (once) and open the feature extractor of `student`."""
    work.mkdir(parents=True, exist_ok=True)
    onnx_path = work / WORK_FILES["features_onnx"]
    stamp = work / WORK_FILES["features_source"]
    source = json.dumps(
        {
            "student": str(Path(student).resolve()),
            "bytes": os.path.getsize(student),
            "mtime": os.path.getmtime(student),
            "block_features": IQA_FEATURES,
        }
    )
    if not onnx_path.is_file() or not stamp.is_file() or stamp.read_text() != source:
        export_features_onnx(load_student_weights(student), onnx_path)
        stamp.write_text(source)
    return FeatureSession(onnx_path)


def save_npz(path: Path, **arrays) -> None:
    with atomic_output(path, binary=True) as handle:
        np.savez(handle, **arrays)


def cache_dev_features(session: FeatureSession, photos: Sequence[tuple[Path, float, bool]], out: Path) -> None:
    """Crop features, MOS and held-out flag of every rated photo (skipped when `out` exists)."""
    if out.is_file():
        return
    features = [session.crop_features(decode_file(path).image) for path, _, _ in tqdm(photos, desc="dev photos", unit="img")]
    save_npz(
        out,
        features=np.stack(features),
        mos=np.array([m for _, m, _ in photos]),
        heldout=np.array([h for _, _, h in photos]),
        names=np.array([p.name for p, _, _ in photos]),
    )


def ladder_of(
    image: Image.Image, seed: str, session: FeatureSession, only: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of the clean image and of every kind (or those in `only`) at every level: (features, kind index, level)."""
    rows, kinds, levels = [session.crop_features(image)], [-1], [0]
    for k, kind in enumerate(LADDER_KINDS):
        if only is not None and kind not in only:
            continue
        for level in range(1, len(LADDER_LEVELS[kind]) + 1):
            rows.append(session.crop_features(ladder_image(image, kind, level, seed)))
            kinds.append(k)
            levels.append(level)
    return np.stack(rows), np.array(kinds), np.array(levels)


def cache_ladder_features(
    session: FeatureSession, sources: Sequence[tuple[str, Path, int | None]], folder: Path, only: Sequence[str] | None = None
) -> None:
    """One .npz per (name, image, long side or None for native size); existing files are kept."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, path, size in tqdm(sources, desc="ladders", unit="ladder"):
        out = folder / (name.replace("/", "__").replace("@", "_") + ".npz")
        if out.is_file():
            continue
        image = decode_file(path).image
        if size is not None:
            image = resize_long_side(image, size)
        features, kinds, levels = ladder_of(image, name, session, only)
        save_npz(out, features=features, kinds=kinds, levels=levels)


def student_heads(work: Path):
    """The student's heads module, from the features ONNX's source student."""
    source = json.loads((work / WORK_FILES["features_source"]).read_text())["student"]
    return load_student_weights(source).heads.eval()
