"""Export a trained student to ONNX (input ``pixels`` [N,3,H,W], output ``scores`` [N,3]) and verify it."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .network import Student

OPSET = 17
MAX_ABS_DIFF = 0.5  # on 0-100 scores, the acceptance bound of issue 3


def export_onnx(student: Student, path: str | Path, size: int) -> Path:
    """Write the student as an ONNX graph with a dynamic batch dimension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    student = student.eval()
    example = torch.zeros(1, 3, size, size)
    torch.onnx.export(
        student,
        (example,),
        str(path),
        input_names=["pixels"],
        output_names=["scores"],
        dynamic_axes={"pixels": {0: "batch"}, "scores": {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,
    )
    return path


def onnx_session(path: str | Path, threads: int = 1):
    """A CPU ONNX Runtime session with a fixed thread count."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session, pixels: np.ndarray, batch: int = 8) -> np.ndarray:
    """Scores [N, 3] for normalised pixels [N, 3, H, W]."""
    outputs = [session.run(["scores"], {"pixels": pixels[i : i + batch]})[0] for i in range(0, len(pixels), batch)]
    return np.concatenate(outputs)


@torch.no_grad()
def max_abs_difference(student: Student, onnx_path: str | Path, pixels: Sequence[np.ndarray]) -> float:
    """Largest |torch - onnx| over the given inputs and all three scores (0-100)."""
    batch = np.stack(pixels).astype(np.float32)
    reference = student.eval()(torch.from_numpy(batch)).numpy()
    exported = run_onnx(onnx_session(onnx_path), batch)
    return float(np.abs(reference - exported).max())
