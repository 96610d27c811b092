"""Real tiny ONNX models and model packages for the runtime tests (no mocks: ORT runs them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from perceptlite.package.manifest import write_package

# Per-channel means -> linear 3x3 -> sigmoid: scores move with brightness and colour balance.
WEIGHTS = np.array([[1.0, -0.5, 0.2], [0.3, 1.0, -0.4], [-0.6, 0.4, 1.0]], dtype=np.float32)
BIAS = np.array([0.1, -0.2, 0.05], dtype=np.float32)


def tiny_scoring_model(batch: int | str = "N", size: tuple[int, int] = (32, 32)) -> onnx.ModelProto:
    """pixels [N,3,H,W] -> ReduceMean(H,W) -> MatMul + Add -> Sigmoid -> scores [N,3]."""
    height, width = size
    pixels = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [batch, 3, height, width])
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 3])
    nodes = [
        helper.make_node("ReduceMean", ["pixels", "axes"], ["means"], keepdims=0),
        helper.make_node("MatMul", ["means", "weights"], ["linear"]),
        helper.make_node("Add", ["linear", "bias"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["scores"]),
    ]
    initializers = [
        numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes"),
        numpy_helper.from_array(WEIGHTS, "weights"),
        numpy_helper.from_array(BIAS, "bias"),
    ]
    graph = helper.make_graph(nodes, "tiny_scorer", [pixels], [scores], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="perceptlite-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def expected_scores(rgb: np.ndarray, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)) -> np.ndarray:
    """What the tiny model gives for an (already resized) HxWx3 uint8 image, on the 0-100 scale."""
    normalised = (rgb.astype(np.float64) / 255.0 - np.asarray(mean)) / np.asarray(std)
    logits = normalised.reshape(-1, 3).mean(axis=0) @ WEIGHTS.astype(np.float64) + BIAS
    return 100.0 / (1.0 + np.exp(-logits))


def make_package(
    folder: Path,
    name: str = "tiny",
    size: tuple[int, int] = (32, 32),
    batch: int | str = "N",
    resize: str = "stretch",
    draft_factor: float = 2.0,
    int8_variant: bool = False,
) -> Path:
    """Write a complete, hash-checked ONNX model package with the tiny model into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(tiny_scoring_model(batch, size), folder / "model.onnx")
    variants = {"fp32": "model.onnx"}
    if int8_variant:
        # A second weight file with the same graph stands in for a quantised variant.
        model = tiny_scoring_model(batch, size)
        model.graph.initializer[2].CopyFrom(numpy_helper.from_array(BIAS + 1.0, "bias"))
        onnx.save(model, folder / "model.int8.onnx")
        variants["int8"] = "model.int8.onnx"
    manifest = {
        "name": name,
        "version": "0.0.1",
        "backend": "onnx",
        "description": "tiny test model: channel means -> linear -> sigmoid",
        "files": list(variants.values()),
        "variants": variants,
        "default_variant": "fp32",
        "input": {
            "size": list(size),
            "resize": resize,
            "interpolation": "bicubic",
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "draft_factor": draft_factor,
        },
        "outputs": {
            axis: {"tensor": "scores", "index": i, "calibration": {"scale": 100.0, "offset": 0.0}}
            for i, axis in enumerate(("iaa", "iqa", "ista"))
        },
        "provenance": {"teacher": "none (test model)", "training_data": "none"},
        "fidelity": {},
    }
    write_package(folder, manifest, f"# {name}\n\nA tiny test model built by the test suite.\n")
    return folder


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory) -> Path:
    """A session-wide tiny ONNX package (64x64 input, dynamic batch)."""
    return make_package(tmp_path_factory.mktemp("models") / "tiny", size=(64, 64))


def tiny_two_view_model(size: tuple[int, int] = (32, 32), crop: int = 16, crops: int | None = 5) -> onnx.ModelProto:
    """pixels [N,3,H,W] + crops [N,K,3,c,c] -> scores [N,3]: iaa and ista from the whole view as in
    `tiny_scoring_model`, iqa = sigmoid(mean of every crop pixel) (a real two-input graph).
    `crops`: K, fixed in the graph's shape; None: any number of crops (a symbolic dimension)."""
    height, width = size
    pixels = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 3, height, width])
    crop_input = helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["N", "K" if crops is None else crops, 3, crop, crop])
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3])
    nodes = [
        helper.make_node("ReduceMean", ["pixels", "axes"], ["means"], keepdims=0),
        helper.make_node("MatMul", ["means", "weights"], ["linear"]),
        helper.make_node("Add", ["linear", "bias"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["whole"]),
        helper.make_node("ReduceMean", ["crops", "crop_axes"], ["crop_mean"], keepdims=0),
        helper.make_node("Sigmoid", ["crop_mean"], ["crop_score"]),
        helper.make_node("Unsqueeze", ["crop_score", "last"], ["crop_column"]),
        helper.make_node("Slice", ["whole", "zero", "one", "last"], ["iaa"]),
        helper.make_node("Slice", ["whole", "two", "three", "last"], ["ista"]),
        helper.make_node("Concat", ["iaa", "crop_column", "ista"], ["scores"], axis=1),
    ]
    initializers = [
        numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes"),
        numpy_helper.from_array(np.array([1, 2, 3, 4], dtype=np.int64), "crop_axes"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "last"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "two"),
        numpy_helper.from_array(np.array([3], dtype=np.int64), "three"),
        numpy_helper.from_array(WEIGHTS, "weights"),
        numpy_helper.from_array(BIAS, "bias"),
    ]
    graph = helper.make_graph(nodes, "tiny_two_view", [pixels, crop_input], [scores], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="perceptlite-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def make_two_view_package(
    folder: Path, crop: int = 16, grid=(3, 3), cells=((0, 1), (1, 0), (1, 1), (1, 2), (2, 1)), any_crop_count: bool = False
) -> Path:
    """A package whose graph also reads native-resolution crops (manifest `input.crops`);
    `any_crop_count`: its graph takes any number of crops per image, as the bundled one does."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(tiny_two_view_model(crop=crop, crops=None if any_crop_count else len(cells)), folder / "model.onnx")
    manifest = {
        "name": "tiny-two-view",
        "version": "0.0.1",
        "backend": "onnx",
        "description": "tiny two-view test model",
        "files": ["model.onnx"],
        "variants": {"fp32": "model.onnx"},
        "default_variant": "fp32",
        "input": {
            "size": [32, 32],
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
            "crops": {"size": crop, "grid": list(grid), "cells": [list(c) for c in cells]},
        },
        "outputs": {
            axis: {"tensor": "scores", "index": i, "calibration": {"scale": 100.0, "offset": 0.0}}
            for i, axis in enumerate(("iaa", "iqa", "ista"))
        },
    }
    write_package(folder, manifest, "# tiny-two-view\n\nA tiny test model built by the test suite.\n")
    return folder
