"""The bundled package's recipe (export/base/): the combined graph, and the whole recipe on a few real photos."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export.base.crop_network import imagenet_crop_net
from export.base.export import runtime_inputs
from export.base.package_model import build_package_onnx, max_difference
from export.base.photos import rated_photos
from perceptlite.package.manifest import load_package

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "models" / "perceptlite-base"


@pytest.fixture(scope="module")
def crop_net():
    torch.manual_seed(0)
    net = imagenet_crop_net(3)
    with torch.no_grad():  # a head that is not the identity of anything the source computes
        for parameter in net.head.parameters():
            parameter.normal_(0, 0.05)
        net.head[-1].bias.fill_(50.0)
    return net.eval()


def test_combined_graph_keeps_the_whole_view_and_takes_iqa_from_the_crop_network(tmp_path, crop_net):
    combined = build_package_onnx(BUNDLED / "model.onnx", crop_net, tmp_path / "model.onnx")
    inputs = runtime_inputs([path for path, _ in rated_photos()[:3]])
    worst = max_difference(combined, BUNDLED / "model.onnx", crop_net, inputs)
    assert worst["iaa"] == 0.0 and worst["ista"] == 0.0  # the same nodes, the same numbers
    assert worst["iqa"] < 0.05
    graph = onnx.load(str(combined)).graph
    crops = next(i for i in graph.input if i.name == "crops")
    assert crops.type.tensor_type.shape.dim[1].dim_param == "views"  # any number of crops
    # Combining again (the bundled package is the next run's source) gives the same graph, not two crop networks.
    again = build_package_onnx(combined, crop_net, tmp_path / "again.onnx")
    assert len(onnx.load(str(again)).graph.node) == len(graph.node)
    assert max_difference(again, BUNDLED / "model.onnx", crop_net, inputs[:1])["iqa"] < 0.05


def _recipe(step: str, work: Path, out: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    where = ["--out", str(out)] if out else []
    return subprocess.run([sys.executable, "-m", "export.base", step, "--smoke", "--work", str(work), *where],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)


def test_smoke_recipe_builds_a_package_the_runtime_scores_with(tmp_path, corpus_dir):
    work, out = tmp_path / "work", tmp_path / "package"
    first = _recipe("all", work, out)
    assert first.returncode == 0, first.stderr[-3000:]
    for step in ("iqa-cv:", "iqa-train:", "export:", "package:"):
        assert step in first.stderr  # every step says how long it took
    manifest = json.loads((out / "perceptlite.json").read_text())
    cv = manifest["fidelity"]["human_cross_validated"]
    assert cv["pooled"]["photos"] == 16 and set(cv["per_fold"]) == {"0", "1"}
    assert manifest["provenance"]["command"].startswith("python -m export.base all")
    card = (out / "MODEL_CARD.md").read_text()
    assert card.index("cross-validated") < card.index("## What it is")  # the card leads with the honest number
    load_package(out).verify()

    photo = sorted((corpus_dir / "bsds500" / "val").glob("*.jpg"))[0]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    scored = subprocess.run([sys.executable, "-m", "perceptlite", "score", str(photo), "-m", str(out), "--json"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert scored.returncode == 0, scored.stderr
    record = json.loads(scored.stdout)[0]
    assert 0.0 <= record["iqa"] <= 100.0 and np.isfinite(record["iaa"])

    # A rerun resumes: nothing is trained again, the folds and the checkpoint are the same files.
    stamps = {p: p.stat().st_mtime_ns for p in [work / "iqa" / "checkpoint.pt", *sorted((work / "iqa-cv").glob("fold-*.json"))]}
    again = _recipe("iqa-cv", work)
    assert again.returncode == 0, again.stderr[-2000:]
    again = _recipe("iqa-train", work)
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_a_checkpoint_from_other_settings_is_refused_in_one_line(tmp_path):
    work = tmp_path / "work"
    (work / "iqa").mkdir(parents=True)
    torch.save({"signature": {"config": {}, "rated": [], "unrated": []}, "epoch": 1, "net": {}, "optimizer": {}, "history": []},
               work / "iqa" / "checkpoint.pt")
    result = _recipe("iqa-train", work)
    assert result.returncode == 1
    assert "made with other photos or settings" in result.stderr and "Traceback" not in result.stderr
