"""Model choice cannot be hijacked and a package is checked whole (issue 12, class 4)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from _runtime_fixtures import make_package, tiny_scoring_model
from onnx import TensorProto, numpy_helper
from onnx.external_data_helper import set_external_data
from PIL import Image

from perceptlite.errors import ModelPackageError
from perceptlite.package.manifest import MANIFEST_NAME, write_package
from perceptlite.package.registry import DEFAULT_MODEL, iter_packages, resolve_model
from perceptlite.scorer import Scorer

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def score(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "perceptlite", "score", *map(str, args)], env=ENV, cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.fixture()
def image(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(path)
    return path


def test_a_local_folder_cannot_replace_a_bundled_name(tmp_path, monkeypatch):
    impostor = make_package(tmp_path / DEFAULT_MODEL, name=DEFAULT_MODEL)
    monkeypatch.chdir(tmp_path)
    bundled = [entry for entry in iter_packages() if entry.name == DEFAULT_MODEL]
    if bundled:
        assert resolve_model(DEFAULT_MODEL) == bundled[0].path != impostor
        assert resolve_model(None) == bundled[0].path
    else:
        with pytest.raises(Exception, match=rf"pass \./{DEFAULT_MODEL}"):
            resolve_model(DEFAULT_MODEL)
    assert resolve_model(f"./{DEFAULT_MODEL}") == Path(f"./{DEFAULT_MODEL}")
    assert resolve_model(impostor) == impostor  # a pathlib.Path is always a folder


def test_a_bare_name_that_is_only_a_local_folder_is_not_found(tmp_path, image):
    make_package(tmp_path / "mine", name="mine")
    run = score("-m", "mine", image, cwd=tmp_path)
    assert run.returncode == 2
    assert "no model package named 'mine'" in run.stderr and "./mine" in run.stderr
    assert score("-m", "./mine", image, "--jsonl", cwd=tmp_path).returncode == 0


def _external_package(folder: Path, listed: bool) -> Path:
    """A package whose weights live in an ONNX external-data file, listed in 'files' or not."""
    folder.mkdir()
    model = tiny_scoring_model(size=(32, 32))
    tensor = next(t for t in model.graph.initializer if t.name == "weights")
    (folder / "weights.bin").write_bytes(tensor.raw_data or numpy_helper.to_array(tensor).tobytes())
    set_external_data(tensor, location="weights.bin", offset=0, length=36)
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    onnx.save(model, folder / "model.onnx")
    manifest = _manifest(["model.onnx", "weights.bin"] if listed else ["model.onnx"])
    return write_package(folder, manifest, "# external\n")


def _manifest(files: list[str]) -> dict:
    return {
        "name": "ext",
        "version": "1",
        "backend": "onnx",
        "files": files,
        "variants": {"fp32": "model.onnx"},
        "default_variant": "fp32",
        "input": {"size": [32, 32]},
        "outputs": {
            axis: {"tensor": "scores", "index": i, "calibration": {"scale": 100.0}} for i, axis in enumerate(("iaa", "iqa", "ista"))
        },
    }


def test_unlisted_external_data_is_refused(tmp_path, image):
    unlisted = _external_package(tmp_path / "unlisted", listed=False)
    with pytest.raises(ModelPackageError, match="weights.bin.*does not list"):
        Scorer(unlisted, device="cpu")
    run = score("-m", unlisted, image)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
    listed = _external_package(tmp_path / "listed", listed=True)
    embedded = make_package(tmp_path / "embedded", size=(32, 32))
    assert Scorer(listed, device="cpu").score(str(image)).iaa == pytest.approx(Scorer(embedded, device="cpu").score(str(image)).iaa)


def _edit_manifest(package: Path, text_edit) -> None:
    path = package / MANIFEST_NAME
    path.write_text(text_edit(path.read_text()))


BAD_MANIFESTS = {
    "scale-string": lambda t: t.replace('"scale": 100.0', '"scale": "100"', 1),
    "scale-nan": lambda t: t.replace('"scale": 100.0', '"scale": NaN', 1),
    "offset-infinity": lambda t: t.replace('"offset": 0.0', '"offset": Infinity', 1),
    "index-negative": lambda t: t.replace('"index": 0', '"index": -1', 1),
    "index-out-of-range": lambda t: t.replace('"index": 2', '"index": 3', 1),
    "index-string": lambda t: t.replace('"index": 1', '"index": "1"', 1),
    "index-bool": lambda t: t.replace('"index": 1', '"index": true', 1),
    "mean-strings": lambda t: t.replace("0.485", '"0.485"', 1),
    "draft-factor-nan": lambda t: t.replace('"draft_factor": 2.0', '"draft_factor": NaN', 1),
    "size-bool": lambda t: t.replace('"size": [\n      64', '"size": [\n      true', 1),
    "tensor-number": lambda t: t.replace('"tensor": "scores"', '"tensor": 7', 1),
    "unknown-variant": lambda t: t.replace('"default_variant": "fp32"', '"default_variant": "fp64"', 1),
    "deep-nesting": lambda t: t.replace('"fidelity": {}', '"fidelity": ' + "[" * 100_000 + "]" * 100_000, 1),
    "version-number": lambda t: t.replace('"version": "0.0.1"', '"version": 1', 1),
}


@pytest.mark.parametrize("edit", list(BAD_MANIFESTS.values()), ids=list(BAD_MANIFESTS))
def test_bad_manifest_values_are_one_line_errors(tmp_path, image, edit):
    package = make_package(tmp_path / "pkg", size=(64, 64))
    before = (package / MANIFEST_NAME).read_text()
    _edit_manifest(package, edit)
    assert (package / MANIFEST_NAME).read_text() != before, "the edit did not apply"
    run = score("-m", package, image, "--jsonl")
    assert run.returncode == 2, run.stdout
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert run.stdout == ""
