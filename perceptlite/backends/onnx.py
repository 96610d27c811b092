"""The ONNX Runtime backend: one InferenceSession per model package, batched inference.

The graph takes ``pixels`` float32 [N, 3, H, W] (normalised as the manifest says), and for a package
whose ``input.crops`` asks for them also native-resolution crops [N, K, 3, S, S], and returns
``scores`` [N, 3]; the manifest's ``outputs`` map columns to axes and calibrate them to 0-100.
``InferenceSession.run`` is thread-safe (ONNX Runtime documents it), so one backend may serve
several threads.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort
from PIL import Image

from ..errors import DeviceError, one_line
from ..package.manifest import ModelPackage, ModelPackageError
from ..package.onnx_files import check_external_data
from .devices import DEVICES
from .preprocess import Region, draft_size, prepare_crops, prepare_pixels

INPUT_NAME = "pixels"
# Accelerators `auto` tries, best first; CPU is always the last resort.
AUTO_PROVIDERS = ("CUDAExecutionProvider", "DmlExecutionProvider", "CoreMLExecutionProvider")
CPU_PROVIDER = "CPUExecutionProvider"


def choose_providers(device: str, available: Sequence[str] | None = None) -> list[str]:
    """Execution providers for --device cpu|cuda|auto among those this ONNX Runtime has."""
    available = list(ort.get_available_providers() if available is None else available)
    if device == "cpu":
        return [CPU_PROVIDER]
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise DeviceError(
                "--device cuda: this ONNX Runtime has no CUDA provider "
                f"(it has {', '.join(p.removesuffix('ExecutionProvider') for p in available)}); "
                "install onnxruntime-gpu or use --device cpu"
            )
        return ["CUDAExecutionProvider", CPU_PROVIDER]
    if device == "auto":
        return [p for p in AUTO_PROVIDERS if p in available] + [CPU_PROVIDER]
    raise DeviceError(f"unknown device {device!r} (use one of: {', '.join(DEVICES)})")


def session_options(threads: int | None) -> ort.SessionOptions:
    """Session options tuned for a decode-then-infer pipeline."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = threads
    # Spinning intra-op threads would steal the cores that the decode workers need between batches.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


class OnnxBackend:
    """Scores images with an ONNX Runtime session; owns its input contract (the manifest's ``input``).

    - ``draft_size``: JPEGs may be draft-decoded down to this side (None when the package reads
      native-resolution crops: those need every decoded pixel);
    - ``prepare(image, region)``: the views the graph reads: the whole image resized from `region`
      (the part of a draft-decoded image that holds the picture) and, when the manifest has
      ``input.crops``, the native-resolution crops of the full image;
    - ``crop_views``: how many crops the graph takes per image when its shape fixes the number
      (None: any number, or no crops); the quality map reads a cell with as many as it needs.
    """

    def __init__(
        self,
        package: ModelPackage,
        device: str = "auto",
        threads: int | None = None,
        *,
        variant: str | None = None,
        batch_size: int | None = None,
        workers: int | None = None,
    ):
        self.package = package
        self.spec = package.input
        self.draft_size = draft_size(self.spec)
        providers = choose_providers(device)
        # On CPU, one image per run with runs side by side (one core each) outpaces one run spread
        # over every core (bench: 2 cores, 25.9 -> 29.4 images/s end to end in process). The runs
        # happen in the `workers` decode threads; with a single worker, its run gets every thread.
        cores = os.cpu_count() or 1
        runs = min(threads or cores, workers or cores)
        side_by_side = providers == [CPU_PROVIDER] and (batch_size or 1) == 1 and runs > 1
        self.parallel_runs = runs if side_by_side else 1
        weights = package.variant_file(variant)
        for name in check_external_data(package.path, weights, package.files):  # every file ORT opens is listed...
            package.open_file(name)  # ...and hash-checked
        options = session_options(1 if side_by_side else threads)
        try:
            self.session = ort.InferenceSession(os.fspath(weights), sess_options=options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise ModelPackageError(f"{weights}: ONNX Runtime cannot load it ({one_line(exc, 300)})") from None
        self.providers = self.session.get_providers()
        self._input_name = self._find_input()
        self._crops_name = self._find_crops_input(weights)
        self.crop_views = self._fixed_crop_views()
        self._output_names = sorted({axis.tensor for axis in package.outputs.values()})
        missing = set(self._output_names) - {o.name for o in self.session.get_outputs()}
        if missing:
            raise ModelPackageError(f"{weights}: graph has no output {', '.join(sorted(missing))} named in the manifest")
        self._check_output_columns(weights)
        self._fixed_batch = self._input_batch_dim()
        self._check_input_size(weights)
        on_gpu = self.providers[0] != CPU_PROVIDER
        # On CPU, batching a convnet gains nothing and multiplies the activation memory.
        self.batch_size = self._fixed_batch or (32 if on_gpu else 1)
        if self.batch_size != 1:
            self.parallel_runs = 1

    @property
    def device(self) -> str:
        """The execution provider doing the work, e.g. "CPU" or "CUDA"."""
        return self.providers[0].removesuffix("ExecutionProvider")

    def prepare(self, image: Image.Image, region: Region | None = None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """RGB image (or its `region`) -> normalised float32 [3, H, W], plus its native-resolution
        crops [K, 3, S, S] when the package reads them (runs in decode worker threads)."""
        pixels = prepare_pixels(image, self.spec, region)
        if self._crops_name is None:
            return pixels
        return pixels, prepare_crops(image, self.spec)

    def infer(self, batch: Sequence[np.ndarray]) -> list[dict[str, float]]:
        """Score a list of prepared inputs; one {axis: 0-100} dict per input, in order."""
        if not batch:
            return []
        step = self._fixed_batch or len(batch)
        results: list[dict[str, float]] = []
        for start in range(0, len(batch), step):
            chunk = batch[start : start + step]
            outputs = dict(zip(self._output_names, self.session.run(self._output_names, self._feeds(chunk))))
            results.extend(self._calibrate(outputs, len(chunk)))
        return results

    def _feeds(self, chunk: Sequence) -> dict[str, np.ndarray]:
        if self._crops_name is None:
            return {self._input_name: np.stack(chunk)}
        return {self._input_name: np.stack([p for p, _ in chunk]), self._crops_name: np.stack([c for _, c in chunk])}

    def _calibrate(self, outputs: dict[str, np.ndarray], count: int) -> list[dict[str, float]]:
        columns = {}
        for axis, spec in self.package.outputs.items():
            values = np.asarray(outputs[spec.tensor], dtype=np.float64).reshape(count, -1)
            if spec.index >= values.shape[1]:
                raise ModelPackageError(
                    f"{self.package.path}: output {spec.tensor!r} has {values.shape[1]} column(s), but outputs.{axis}.index is {spec.index}"
                )
            raw = values[:, spec.index]
            # NaN or Infinity from the model stays NaN (the pipeline makes it an error record), never a clipped 0 or 100.
            columns[axis] = np.where(np.isfinite(raw), np.clip(spec.scale * raw + spec.offset, 0.0, 100.0), np.nan)
        return [{axis: float(values[i]) for axis, values in columns.items()} for i in range(count)]

    def _find_input(self) -> str:
        inputs = self.session.get_inputs()
        names = [i.name for i in inputs]
        if INPUT_NAME in names:
            return INPUT_NAME
        if len(inputs) == 1:
            return inputs[0].name
        raise ModelPackageError(f"{self.package.path}: graph has no input named {INPUT_NAME!r} (it has {', '.join(names)})")

    def _find_crops_input(self, weights) -> str | None:
        crops = self.spec.crops
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        if crops is None:
            if len(inputs) > 1:
                raise ModelPackageError(
                    f"{weights}: graph takes {len(inputs)} inputs but the manifest describes one ('input.crops' missing)"
                )
            return None
        shape = inputs.get(crops.tensor)
        if shape is None:
            raise ModelPackageError(f"{weights}: graph has no input {crops.tensor!r} named in the manifest's input.crops")
        expected = [crops.count, 3, crops.size, crops.size]
        if len(shape) != 5 or any(isinstance(d, int) and d != e for d, e in zip(shape[1:], expected)):
            raise ModelPackageError(
                f"{weights}: graph input {crops.tensor!r} has shape {shape}, manifest's input.crops says [N, {', '.join(map(str, expected))}]"
            )
        return crops.tensor

    def _fixed_crop_views(self) -> int | None:
        """How many crops the graph takes per image when its shape fixes it; None when it takes
        any number (a symbolic dimension) or reads no crops. The quality map reads cells with it."""
        if self._crops_name is None:
            return None
        views = next(i.shape for i in self.session.get_inputs() if i.name == self._crops_name)[1]
        return views if isinstance(views, int) else None

    def _check_input_size(self, weights) -> None:
        shape = next(i.shape for i in self.session.get_inputs() if i.name == self._input_name)
        fixed = [d if isinstance(d, int) else None for d in shape[2:4]] if len(shape) == 4 else []
        expected = list(self.spec.size)
        if any(d is not None and d != e for d, e in zip(fixed, expected)):
            raise ModelPackageError(
                f"{weights}: graph input is {shape[2]}x{shape[3]} but the manifest's input.size is {expected[0]}x{expected[1]}"
            )

    def _check_output_columns(self, weights) -> None:
        """Each axis's column index must exist in its output tensor's (static) shape."""
        shapes = {output.name: output.shape for output in self.session.get_outputs()}
        for axis, spec in self.package.outputs.items():
            columns = shapes[spec.tensor][1:]
            if not all(isinstance(d, int) for d in columns):
                continue  # a dynamic shape: checked on every batch by _calibrate
            width = int(np.prod(columns)) if columns else 1
            if spec.index >= width:
                raise ModelPackageError(
                    f"{weights}: output {spec.tensor!r} has shape {shapes[spec.tensor]} ({width} column(s)), "
                    f"but the manifest's outputs.{axis}.index is {spec.index}"
                )

    def _input_batch_dim(self) -> int | None:
        shape = next(i.shape for i in self.session.get_inputs() if i.name == self._input_name)
        return shape[0] if shape and isinstance(shape[0], int) and shape[0] > 0 else None
