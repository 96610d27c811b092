"""Manifests that could be read two ways are refused in one line (issue 23, class 6): a list as
`default_variant`, a NUL in a file name, a key given twice, a manifest that links out of its package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _runtime_fixtures import make_package
from PIL import Image

from perceptlite.errors import ModelPackageError
from perceptlite.package.manifest import MANIFEST_NAME, load_package

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perceptlite", *map(str, args)], env=ENV, capture_output=True, text=True, timeout=120)


@pytest.fixture()
def image(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(path)
    return path


def _refused(package: Path, image: Path, expected: str) -> None:
    for args in (["score", "-m", package, image, "--jsonl"], ["models", "show", package]):
        run = cli(*args)
        assert run.returncode == 2 and run.stdout == "", (args, run.stdout, run.stderr)
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
        assert expected in lines[0], lines[0]
    with pytest.raises(ModelPackageError, match=expected):
        load_package(package)


EDITS = {
    "default-variant-list": ('"default_variant": "fp32"', '"default_variant": ["fp32"]', "default_variant"),
    "default-variant-object": ('"default_variant": "fp32"', '"default_variant": {"fp32": 1}', "default_variant"),
    "default-variant-number": ('"default_variant": "fp32"', '"default_variant": 32', "default_variant"),
    "nul-in-a-file-name": ('"model.onnx": {', '"model\\u0000.onnx": {', "NUL"),
    "empty-file-name": ('"model.onnx": {', '"": {', "empty"),
    "duplicate-top-level-key": ('"default_variant": "fp32"', '"default_variant": "int8", "default_variant": "fp32"', "appears twice"),
    "duplicate-sha256": ('"sha256": ', '"sha256": "0000", "sha256": ', "appears twice"),
}


@pytest.mark.parametrize("old, new, expected", list(EDITS.values()), ids=list(EDITS))
def test_ambiguous_manifests_are_one_line_refusals(tmp_path, image, old, new, expected):
    package = make_package(tmp_path / "pkg", int8_variant=True)
    manifest = package / MANIFEST_NAME
    text = manifest.read_text()
    assert old in text
    manifest.write_text(text.replace(old, new, 1))
    _refused(package, image, expected)


@pytest.mark.parametrize("where", ["outside", "other-package"])
def test_a_manifest_that_links_out_of_its_package_is_refused(tmp_path, image, where):
    package = make_package(tmp_path / "pkg")
    other = make_package(tmp_path / "other") if where == "other-package" else None
    target = (other / MANIFEST_NAME) if other else tmp_path / "elsewhere.json"
    if other is None:
        (package / MANIFEST_NAME).rename(target)
    else:
        (package / MANIFEST_NAME).unlink()
    (package / MANIFEST_NAME).symlink_to(target)
    _refused(package, image, "link out of the package")


def test_a_manifest_linked_inside_its_package_still_loads(tmp_path, image):
    package = make_package(tmp_path / "pkg")
    (package / MANIFEST_NAME).rename(package / "real.json")
    (package / MANIFEST_NAME).symlink_to("real.json")
    run = cli("score", "-m", package, image, "--jsonl")
    assert run.returncode == 0, run.stderr
