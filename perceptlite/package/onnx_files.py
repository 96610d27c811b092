"""Which files an ONNX model reads besides itself: the locations of its external-data tensors.

ONNX Runtime opens an external-data file named inside the graph relative to the model's folder
(``..`` included), so a package is only checked whole when every such location is a file that
the manifest lists (and therefore hashed). The graph is read with protobuf's wire-format parser
(a dependency of onnxruntime), field numbers from onnx.proto; no ``onnx`` package is needed.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import ModelPackageError, one_line

# message kind -> {field number: kind of the sub-message in that field}, per onnx/onnx.proto.
_CHILDREN = {
    "model": {7: "graph", 20: "training", 25: "function"},  # ModelProto.graph, training_info, functions
    "training": {1: "graph", 2: "graph"},  # TrainingInfoProto.initialization, algorithm
    "graph": {1: "node", 5: "tensor", 15: "sparse"},  # GraphProto.node, initializer, sparse_initializer
    "function": {7: "node"},  # FunctionProto.node
    "node": {5: "attribute"},  # NodeProto.attribute
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},  # SparseTensorProto.values, indices
}
_TENSOR_EXTERNAL_DATA = 13  # TensorProto.external_data: repeated StringStringEntryProto {key=1, value=2}
_LENGTH_DELIMITED = 2


def external_data_locations(model_bytes: bytes) -> set[str]:
    """Every ``location`` that a tensor of the model (subgraphs and functions included) names."""
    locations: set[str] = set()
    stack = [("model", model_bytes)]
    while stack:
        kind, raw = stack.pop()
        for number, data in _length_delimited_fields(raw):
            if kind == "tensor" and number == _TENSOR_EXTERNAL_DATA:
                entry = dict(_length_delimited_fields(data))
                if entry.get(1) == b"location":
                    locations.add(entry.get(2, b"").decode("utf-8", "surrogateescape"))
            child = _CHILDREN.get(kind, {}).get(number)
            if child is not None:
                stack.append((child, data))
    return locations


def check_external_data(package_folder: Path, model_file: Path, listed: Iterable[str]) -> list[str]:
    """The listed names of `model_file`'s external-data files (which ONNX Runtime will open);
    ModelPackageError unless every one of them is listed in the package."""
    try:
        data = model_file.read_bytes()
        # The key "location" is stored as plain bytes: a model without it has no external data.
        locations = external_data_locations(data) if b"location" in data else set()
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise ModelPackageError(f"{model_file}: not a readable ONNX file ({one_line(exc)})") from None
    known = {posixpath.normpath(name) for name in listed}
    model_folder = posixpath.dirname(model_file.relative_to(package_folder).as_posix())
    names = []
    for location in sorted(locations):
        name = posixpath.normpath(posixpath.join(model_folder, location.replace(os.sep, "/")))
        if os.path.isabs(location) or name.startswith("../") or name not in known:
            raise ModelPackageError(
                f"{model_file}: reads external data {location!r}, which the manifest's 'files' does not list; "
                "every file a model reads must be listed with its sha256"
            )
        names.append(name)
    return names


def _length_delimited_fields(raw: bytes) -> Iterator[tuple[int, bytes]]:
    from google.protobuf import empty_pb2
    from google.protobuf.unknown_fields import UnknownFieldSet

    message = empty_pb2.Empty()
    message.ParseFromString(raw)
    for field in UnknownFieldSet(message):
        if field.wire_type == _LENGTH_DELIMITED:
            yield field.field_number, field.data
