"""The export step: combine the source's whole view with the trained crop network, check it, quantise it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from export.common.errors import FactoryError
from export.common.quantize import quantize_int8

from .crop_network import imagenet_crop_net
from .package_model import build_package_onnx, max_difference

MAX_ABS_DIFF = 0.05  # score points between the combined graph and its parts


class ExportError(FactoryError, RuntimeError):
    """The exported graph does not compute what its parts compute."""


def load_trained(checkpoint: Path):
    if not checkpoint.is_file():
        raise ExportError(f"{checkpoint}: missing; run `python -m export.base iqa-train` first")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    net = imagenet_crop_net(state["signature"]["config"]["frozen_blocks"])
    net.load_state_dict(state["net"])
    return net.eval()


def runtime_inputs(paths: Sequence[Path]) -> list[dict[str, np.ndarray]]:
    """Each image's inputs, prepared exactly as the runtime prepares them."""
    from export.wholeview.export import model_inputs

    return [model_inputs(path) for path in paths]


def export_package_files(work: Path, source: Path, calibration: Sequence[tuple[Path, float]]) -> dict:
    torch.set_flush_denormal(True)
    net = load_trained(work / "iqa" / "checkpoint.pt")
    fp32 = build_package_onnx(source / "model.onnx", net, work / "model.onnx")
    inputs = runtime_inputs([path for path, _ in calibration])
    worst = max_difference(fp32, source / "model.onnx", net, inputs[:16])
    if max(worst.values()) > MAX_ABS_DIFF:
        raise ExportError(f"{fp32}: differs from its parts by {worst} points (limit {MAX_ABS_DIFF})")
    quantize_int8(fp32, work / "model.int8.onnx", inputs)
    summary = {"combined_vs_parts_max_abs": worst, "calibration_images": len(inputs)}
    (work / "export.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
