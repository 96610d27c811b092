"""Export the two-view model to ONNX, check it against torch, and quantise it to int8."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from export.common.errors import FactoryError
from export.common.quantize import quantize_int8
from perceptlite.backends.preprocess import prepare_crops, prepare_pixels
from perceptlite.images.decode import decode_file

from .config import WORK_FILES
from .fit import load_iqa_head
from .model import IaaBlend, PerceptModel, export_model_onnx, input_spec, load_student_weights

MAX_ABS_DIFF = 0.05  # score points between ONNX Runtime and torch


def build_model(work: Path, student: Path) -> PerceptModel:
    knots = json.loads((work / WORK_FILES["iaa_knots"]).read_text())["knots"]
    blend = IaaBlend.load(work / WORK_FILES["iaa_blend"])
    return PerceptModel(load_student_weights(student), load_iqa_head(work), blend, [tuple(k) for k in knots]).eval()


def model_inputs(path: Path) -> dict[str, np.ndarray]:
    """One image's inputs, prepared exactly as the runtime prepares them."""
    spec = input_spec()
    image = decode_file(path).image
    return {"pixels": prepare_pixels(image, spec), "crops": prepare_crops(image, spec)}


def export_package_files(work: Path, student: Path, calibration_photos: Sequence[Path]) -> dict:
    """WORK/model.onnx and WORK/model.int8.onnx, and how far ONNX Runtime is from torch."""
    import onnxruntime as ort

    model = build_model(work, student)
    fp32 = export_model_onnx(model, work / WORK_FILES["fp32"])
    inputs = [model_inputs(p) for p in calibration_photos]
    session = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    worst = 0.0
    for item in inputs[:16]:
        onnx_scores = session.run(None, {k: v[None] for k, v in item.items()})[0]
        with torch.no_grad():
            torch_scores = model(torch.from_numpy(item["pixels"][None]), torch.from_numpy(item["crops"][None])).numpy()
        worst = max(worst, float(np.abs(onnx_scores - torch_scores).max()))
    if worst > MAX_ABS_DIFF:
        raise FactoryError(f"{fp32}: ONNX Runtime differs from torch by {worst:.3f} points (limit {MAX_ABS_DIFF})")
    quantize_int8(fp32, work / WORK_FILES["int8"], inputs)
    summary = {"onnx_vs_torch_max_abs": round(worst, 5), "calibration_images": len(inputs)}
    (work / WORK_FILES["export_summary"]).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
