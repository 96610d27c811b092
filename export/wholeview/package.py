"""Write the two-view package: ONNX files, manifest (input contract, provenance, fidelity), model card."""

from __future__ import annotations

import dataclasses
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

from export.common.errors import FactoryError
from perceptlite.package.manifest import write_package

from .config import VARIANT_FILES, WORK_FILES
from .model import CROP_CELLS, CROP_LAYOUT, CROP_MAX_SIDE, CROP_SIZE, IQA_HIDDEN, input_spec

NAME = "perceptlite-base"
DESCRIPTION = (
    "EfficientNet-Lite0 student (iaa, ista distilled from open teachers) with an iqa head learnt from "
    f"human opinion scores on crops at the photo's working size (its own pixels up to {CROP_MAX_SIDE:,} px); not UniPercept"
)
TRAINED_ON = (
    "mean opinion scores of the training part (75 %) of ../shared/human/clive-dev (LIVE In the Wild, 600 phone photos), "
    "plus ranking of distortion ladders (noise, JPEG, resampling, Gaussian and motion blur) of 80 of those photos at 500 px and 12 Debian wallpapers at 1,000-4,000 px, "
    "and noise and JPEG ladders of 24 corpus training photos enlarged to 2,000 and 4,000 px"
)


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def build_manifest(work: Path, version: str, command: str, fidelity: dict | None, name: str = NAME) -> dict:
    student = _read(work / WORK_FILES["student_provenance"]).get("provenance", {})
    fit = _read(work / WORK_FILES["fit"])
    return {
        "name": name,
        "version": version,
        "backend": "onnx",
        "description": DESCRIPTION,
        "files": list(VARIANT_FILES.values()),
        "variants": dict(VARIANT_FILES),
        "default_variant": "int8",
        "input": dataclasses.asdict(input_spec()),  # the contract the features were cut with
        "outputs": {
            axis: {"tensor": "scores", "index": index, "calibration": {"scale": 1.0, "offset": 0.0}}
            for index, axis in enumerate(("iaa", "iqa", "ista"))
        },
        "provenance": {
            "iqa": {
                "what": f"MLP head ({IQA_HIDDEN} hidden units) on the mean and standard deviation of every backbone block's output, averaged over {len(CROP_CELLS)} {CROP_SIZE}-px crops ({CROP_LAYOUT} of a 3 x 3 grid) of the photo at its own pixels up to {CROP_MAX_SIDE} px on the long side, as if resized to {CROP_MAX_SIDE} px above it",
                "trained_on": TRAINED_ON + _teacher_words(fit.get("teacher")),
                "held_out": "dev photos with sha256(file name) % 100 < 25 (export/common/splits.py): never trained on; 6 wallpaper photos never trained on",
                "fit": fit,
            },
            "iaa": {
                "what": "the student's iaa head (distilled from NIMA) blended with a ridge on the whole view's block statistics (fitted to NIMA's iaa of the distillation's training label records: clean, distorted and cropped corpus photos), through a monotone map onto the spread of AVA's human mean ratings",
                "calibration": _read(work / WORK_FILES["iaa_knots"]),
            },
            "ista": {"what": "the student's ista head, unchanged"},
            "student": student,
            "speed": _read(work / WORK_FILES["speed"]),
            "command": command,
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "fidelity": fidelity or {},
    }


def write_quality_package(work: Path, out: Path, version: str, command: str, fidelity: dict | None, name: str = NAME) -> Path:
    """Copy the ONNX files into `out`, write its manifest and model card."""
    from .card import model_card

    out.mkdir(parents=True, exist_ok=True)
    for filename in VARIANT_FILES.values():
        source = work / filename
        if not source.is_file():
            raise FactoryError(f"{source}: missing; run `python -m export.wholeview export` first")
        if not (out / filename).is_file() or (out / filename).read_bytes() != source.read_bytes():
            shutil.copyfile(source, out / filename)
    manifest = build_manifest(work, version, command, fidelity, name)
    return write_package(out, manifest, model_card(manifest))


def _teacher_words(teacher: dict | None) -> str:
    if not teacher or not teacher.get("weight"):
        return ""
    return f", plus a teacher's iqa of {teacher.get('photos')} unrated photos at weight {teacher['weight']} (provenance.iqa.fit.teacher)"
