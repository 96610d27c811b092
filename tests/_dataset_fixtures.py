"""Fixtures for the dataset tests: a tiny real ONNX model package and folders of real images."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from perceptlite.package.manifest import write_package

REPO = Path(__file__).resolve().parents[1]
INPUT_SIZE = 32


def build_tiny_package(folder: Path, name: str = "tiny-dataset", slow_layers: int = 0) -> Path:
    """A real ONNX package: scores are an affine map of the per-channel means and spread.

    `slow_layers` adds input-dependent matrix products whose result is multiplied by zero, so the
    scores stay the same but each batch costs measurable time (used to kill a run half-way).
    """
    folder.mkdir(parents=True, exist_ok=True)
    weights = np.array([[1.0, 0.4, -0.3], [0.5, 1.0, 0.2], [-0.2, 0.3, 1.0]], dtype=np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["pixels"], ["means4"], axes=[2, 3], keepdims=1),
        helper.make_node("Flatten", ["means4"], ["means"], axis=1),
        helper.make_node("Sub", ["pixels", "means4"], ["centred"]),
        helper.make_node("Abs", ["centred"], ["spread4"]),
        helper.make_node("ReduceMean", ["spread4"], ["spread_mean"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["means", "weights"], ["mixed"]),
        helper.make_node("Mul", ["spread_mean", "texture_gain"], ["texture"]),
        helper.make_node("Add", ["mixed", "texture"], ["raw"]),
    ]
    initializers = [
        numpy_helper.from_array(weights, "weights"),
        numpy_helper.from_array(np.array([0.0, 0.0, 2.0], dtype=np.float32), "texture_gain"),
    ]
    last = "raw"
    if slow_layers:
        width = 1024
        rng = np.random.default_rng(0)
        initializers += [
            numpy_helper.from_array(rng.standard_normal((3, width)).astype(np.float32) * 0.01, "slow_in"),
            numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32) * 0.01, "slow_w"),
            numpy_helper.from_array(np.zeros((1, 3), dtype=np.float32), "slow_zero"),
        ]
        nodes.append(helper.make_node("MatMul", ["means", "slow_in"], ["slow0"]))
        for index in range(slow_layers):
            nodes.append(helper.make_node("MatMul", [f"slow{index}", "slow_w"], [f"slow{index + 1}"]))
        nodes += [
            helper.make_node("ReduceMean", [f"slow{slow_layers}"], ["slow_sum"], axes=[1], keepdims=1),
            helper.make_node("Mul", ["slow_sum", "slow_zero"], ["slow_nothing"]),
            helper.make_node("Add", ["raw", "slow_nothing"], ["raw_slow"]),
        ]
        last = "raw_slow"
    nodes.append(helper.make_node("Identity", [last], ["scores"]))
    graph = helper.make_graph(
        nodes,
        "tiny_dataset",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 3, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, folder / "model.onnx")
    manifest = {
        "name": name,
        "version": "1",
        "backend": "onnx",
        "description": "tiny test model for the dataset tests",
        "files": ["model.onnx"],
        "variants": {"fp32": "model.onnx"},
        "default_variant": "fp32",
        "input": {"size": [INPUT_SIZE, INPUT_SIZE], "resize": "stretch", "interpolation": "bilinear"},
        "outputs": {
            axis: {"tensor": "scores", "index": index, "calibration": {"scale": 12.0, "offset": 50.0}}
            for index, axis in enumerate(("iaa", "iqa", "ista"))
        },
    }
    return write_package(folder, manifest, "# tiny-dataset\n\nA test model: affine map of channel statistics.\n")


def make_images(folder: Path, count: int, start: int = 0, size: int = 24, subfolders: int = 3) -> list[Path]:
    """`count` small real PNG/JPEG images with distinct content, spread over a few subfolders."""
    paths = []
    for index in range(start, start + count):
        rng = np.random.default_rng(index)
        base = rng.integers(0, 256, size=3)
        noise = rng.integers(0, 1 + (index * 7) % 120, size=(size, size, 3))
        pixels = np.clip(base + noise - 30, 0, 255).astype(np.uint8)
        sub = folder / f"part{index % subfolders}" if subfolders else folder
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / (f"img{index:05d}.png" if index % 2 else f"img{index:05d}.jpg")
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def run_cli(
    *args: str, cwd: Path | None = None, env: dict | None = None, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run `python -m perceptlite ARGS` in a subprocess with few threads."""
    full_env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    full_env.update(env or {})
    completed = subprocess.run(
        [sys.executable, "-m", "perceptlite", *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and completed.returncode != 0:
        raise AssertionError(f"perceptlite {' '.join(map(str, args))} failed ({completed.returncode}):\n{completed.stderr}")
    return completed
