"""Static int8 quantisation of the student (QDQ, per-channel weights) with calibration images."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np


class _PixelsReader:
    """Feeds calibration inputs one at a time to onnxruntime's calibrator."""

    def __init__(self, pixels: Sequence[np.ndarray]):
        self._items = iter(pixels)

    def get_next(self):
        item = next(self._items, None)
        return None if item is None else {"pixels": item[None].astype(np.float32)}


def quantize_int8(fp32_path: str | Path, int8_path: str | Path, calibration: Sequence[np.ndarray]) -> Path:
    """Write a statically quantised copy of `fp32_path`, calibrated on normalised CHW inputs."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    int8_path = Path(int8_path)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(int8_path),
            _PixelsReader(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            # The heads and the pooled statistics stay float: they are small and precision-sensitive.
            op_types_to_quantize=["Conv"],
        )
    return int8_path
