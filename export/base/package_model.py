"""The package's ONNX graph: the whole view's iaa and ista, unchanged, beside the fine-tuned crop network's iqa.

    pixels [N, 3, 224, 224] -> the distilled student's whole view -> iaa, ista   (taken from the source package)
    crops  [N, K, 3, 224, 224] -> CropIqaNet                        -> iqa         (this recipe's training)
      -> scores [N, 3] (iaa, iqa, ista), the same contract the runtime already reads

The whole view is taken from the source package's graph rather than rebuilt in torch: its iaa blend and
calibration are constants inside that graph, and copying the nodes keeps iaa and ista bit for bit what
they were (a test checks it). The source's own iqa branch, and any crops it pushed through the shared
backbone, become dead nodes and are pruned, so the crops pass through one network only.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from export.common.errors import FactoryError

from .crop_network import CropIqaNet

CROP_NET_PREFIX = "iqa_net"
SCORES = "scores"
IQA_INDEX = 1  # scores[:, 1] is iqa


class GraphError(FactoryError, ValueError):
    """A source graph this module cannot take the whole view from."""


FEATURES = "iqa_features"  # a second graph output: what a user's own head is fitted on (export/base/own_ratings.py)


class _ClampedIqa(torch.nn.Module):
    def __init__(self, net: CropIqaNet):
        super().__init__()
        self.net = net

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        count, views = crops.shape[:2]
        features = self.net.block_features(crops.flatten(0, 1)).reshape(count, views, -1).mean(dim=1)
        return torch.clamp(self.net.score_features(features), 0.0, 100.0), features


def export_crop_net(net: CropIqaNet, path: Path, crops: int = 3) -> Path:
    """CropIqaNet as ONNX: crops [batch, views, 3, S, S] -> iqa [batch] on 0-100, and the crop-pooled features it reads."""
    size = 224
    torch.onnx.export(
        _ClampedIqa(net).eval(),
        (torch.zeros(1, crops, 3, size, size),),
        str(path),
        input_names=["crops"],
        output_names=["iqa", FEATURES],
        dynamic_axes={"crops": {0: "batch", 1: "views"}, "iqa": {0: "batch"}, FEATURES: {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    return path


def _prefixed(name: str) -> str:
    return name if name in ("", "crops") else f"{CROP_NET_PREFIX}/{name.lstrip('/')}"


def _iqa_unsqueeze(graph) -> object:
    """The node feeding scores' iqa column into the final Concat."""
    producers = {out: node for node in graph.node for out in node.output}
    final = producers.get(SCORES)
    if final is None or final.op_type != "Concat" or len(final.input) != 3:
        raise GraphError(f"the graph's {SCORES!r} is not a Concat of three columns")
    column = producers.get(final.input[IQA_INDEX])
    if column is None or column.op_type != "Unsqueeze":
        raise GraphError("the iqa column of scores does not come from an Unsqueeze")
    return column


def _bypass_shared_batch(graph) -> None:
    """Where the source ran pixels and crops as one backbone batch, let the backbone see pixels only."""
    for node in list(graph.node):
        if node.op_type == "Concat" and node.input and node.input[0] == "pixels":
            merged = node.output[0]
            for consumer in graph.node:
                for index, name in enumerate(consumer.input):
                    if name == merged:
                        consumer.input[index] = "pixels"
            graph.node.remove(node)


def _prune(graph) -> None:
    """Drop every node and initializer the graph's outputs do not depend on."""
    producers = {out: node for node in graph.node for out in node.output}
    needed, stack, keep = set(), [o.name for o in graph.output], set()
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        node = producers.get(name)
        if node is not None and id(node) not in keep:
            keep.add(id(node))
            stack.extend(n for n in node.input if n)
            for attribute in node.attribute:  # subgraphs (If/Loop) are not expected, but keep their inputs alive
                if attribute.g is not None:
                    stack.extend(i.name for i in attribute.g.input)
    kept_nodes = [n for n in graph.node if id(n) in keep]
    del graph.node[:]
    graph.node.extend(kept_nodes)
    kept_inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)
    del graph.value_info[:]


def combine(source_onnx: Path, crop_net_onnx: Path, out: Path) -> Path:
    """Write `out`: the source package's whole view (iaa, ista) with iqa from the crop network's graph."""
    import onnx

    source = onnx.load(str(source_onnx))
    crop = onnx.load(str(crop_net_onnx))
    graph = source.graph
    if [i.name for i in graph.input] != ["pixels", "crops"]:
        raise GraphError(f"{source_onnx}: inputs {[i.name for i in graph.input]}, expected ['pixels', 'crops']")
    # An earlier combination's crop network is dropped with the rest of the dead iqa branch.
    _iqa_unsqueeze(graph).input[0] = _prefixed(crop.graph.output[0].name)
    _bypass_shared_batch(graph)
    for node in crop.graph.node:
        node.name = _prefixed(node.name or node.output[0])
        node.input[:] = [_prefixed(n) for n in node.input]
        node.output[:] = [_prefixed(n) for n in node.output]
    for initializer in crop.graph.initializer:
        initializer.name = _prefixed(initializer.name)
    existing = {n.output[0] for n in graph.node} | {i.name for i in graph.initializer}
    clashes = existing & ({o for n in crop.graph.node for o in n.output} | {i.name for i in crop.graph.initializer})
    _drop_previous_crop_net(graph, clashes)
    graph.node.extend(crop.graph.node)
    graph.initializer.extend(crop.graph.initializer)
    _toposort(graph)
    _expose_features(graph, crop)
    _prune(graph)
    # The crops input now takes any number of views (the map feeds one cell at a time).
    crops_input = next(i for i in graph.input if i.name == "crops")
    crops_input.type.tensor_type.shape.dim[1].dim_param = "views"
    onnx.checker.check_model(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(source, str(out))
    return out


def _expose_features(graph, crop) -> None:
    """Make the crop network's pooled features a graph output named FEATURES (an Identity of its prefixed output)."""
    import onnx

    kept = [o for o in graph.output if o.name != FEATURES]
    del graph.output[:]
    graph.output.extend(kept)
    nodes = [n for n in graph.node if not (n.op_type == "Identity" and list(n.output) == [FEATURES])]
    del graph.node[:]
    graph.node.extend(nodes)
    source = next(o for o in crop.graph.output if o.name == FEATURES)
    graph.node.append(onnx.helper.make_node("Identity", [_prefixed(FEATURES)], [FEATURES], name="iqa_features_output"))
    output = onnx.ValueInfoProto()
    output.CopyFrom(source)
    graph.output.append(output)


def _drop_previous_crop_net(graph, names: set[str]) -> None:
    if not names:
        return
    kept = [n for n in graph.node if not n.name.startswith(f"{CROP_NET_PREFIX}/")]
    del graph.node[:]
    graph.node.extend(kept)
    inits = [i for i in graph.initializer if not i.name.startswith(f"{CROP_NET_PREFIX}/")]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def _toposort(graph) -> None:
    """Order nodes so each comes after its inputs' producers (the crop network was appended after its consumer)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            missing = sorted({i for n in pending for i in n.input if i not in available})[:5]
            raise GraphError(f"the combined graph has inputs nothing produces: {missing}")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    del graph.node[:]
    graph.node.extend(ordered)


def build_package_onnx(source_onnx: Path, net: CropIqaNet, out: Path) -> Path:
    """Export `net` and combine it with the source package's whole view into `out`."""
    with tempfile.TemporaryDirectory() as scratch:
        crop_onnx = export_crop_net(net, Path(scratch) / "crop_net.onnx")
        return combine(source_onnx, crop_onnx, out)


def max_difference(combined_onnx: Path, source_onnx: Path, net: CropIqaNet, inputs: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """How far the combined graph is from its parts: iaa and ista from the source graph, iqa from torch."""
    import onnxruntime as ort

    combined = ort.InferenceSession(str(combined_onnx), providers=["CPUExecutionProvider"])
    source = ort.InferenceSession(str(source_onnx), providers=["CPUExecutionProvider"])
    worst = {"iaa": 0.0, "iqa": 0.0, "ista": 0.0}
    for item in inputs:
        feed = {k: v[None] for k, v in item.items()}
        new, old = combined.run(None, feed)[0][0], source.run(None, feed)[0][0]
        with torch.no_grad():
            iqa = float(torch.clamp(net(torch.from_numpy(item["crops"][None])), 0, 100)[0])
        worst["iaa"] = max(worst["iaa"], abs(float(new[0] - old[0])))
        worst["ista"] = max(worst["ista"], abs(float(new[2] - old[2])))
        worst["iqa"] = max(worst["iqa"], abs(float(new[1]) - iqa))
    return {k: round(v, 5) for k, v in worst.items()}
