"""Export a trained student to ONNX (input ``pixels`` [N,3,H,W], output ``scores`` [N,3]) and verify it."""

from __future__ import annotations

from pathlib import Path

import torch

from export.common.network import Student

OPSET = 17


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
