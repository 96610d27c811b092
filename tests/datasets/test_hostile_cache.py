"""The cache returns a score only when the same model would compute it (issue 12, class 3)."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _runtime_fixtures import make_package
from PIL import Image

from perceptlite.datasets.cache import APPLICATION_ID, model_key
from perceptlite.package.manifest import MANIFEST_NAME, load_package, write_package

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def score(*args, code: int = 0) -> subprocess.CompletedProcess:
    run = subprocess.run(
        [sys.executable, "-m", "perceptlite", "score", *map(str, args)], env=ENV, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == code, run.stderr
    return run


def reused(run: subprocess.CompletedProcess) -> int:
    match = re.search(r"(\d+) reused, (\d+) newly scored", run.stderr)
    assert match, run.stderr
    return int(match.group(1))


def scores(run: subprocess.CompletedProcess) -> dict[str, tuple]:
    return {r["path"]: (r["iaa"], r["iqa"], r["ista"]) for r in map(json.loads, run.stdout.splitlines())}


@pytest.fixture()
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(9)
    for index in range(4):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    return folder


def _recalibrated(source: Path, folder: Path, change) -> Path:
    """A copy of a package with the same weight files and a changed manifest."""
    folder.mkdir()
    manifest = json.loads((source / MANIFEST_NAME).read_text())
    for name in manifest["files"]:
        (folder / name).write_bytes((source / name).read_bytes())
    manifest["files"] = list(manifest["files"])
    change(manifest)
    return write_package(folder, manifest, "# changed\n")


def test_variant_is_part_of_the_key(tmp_path, images):
    package = make_package(tmp_path / "pkg", int8_variant=True)
    cache = tmp_path / "c.db"
    score("-m", package, images, "--variant", "int8", "--cache", cache, "--jsonl")
    fp32 = score("-m", package, images, "--variant", "fp32", "--cache", cache, "--jsonl")
    assert reused(fp32) == 0
    assert scores(fp32) == scores(score("-m", package, images, "--variant", "fp32", "--jsonl"))
    again = score("-m", package, images, "--cache", cache, "--jsonl")  # the default variant is fp32
    assert reused(again) == 4


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m["outputs"]["iaa"]["calibration"].update(scale=50.0),
        lambda m: m["input"].update(interpolation="bilinear"),
        lambda m: m.update(version="0.0.2"),
        lambda m: m.update(default_variant="int8"),
    ],
    ids=["calibration", "input-spec", "version", "default-variant"],
)
def test_manifest_changes_are_part_of_the_key(tmp_path, images, change):
    package = make_package(tmp_path / "pkg", int8_variant=True)
    changed = _recalibrated(package, tmp_path / "changed", change)
    assert model_key(load_package(package)) != model_key(load_package(changed))
    cache = tmp_path / "c.db"
    score("-m", package, images, "--cache", cache, "--jsonl")
    run = score("-m", changed, images, "--cache", cache, "--jsonl")
    assert reused(run) == 0
    assert scores(run) == scores(score("-m", changed, images, "--jsonl"))


def test_descriptive_fields_keep_the_key(tmp_path):
    package = make_package(tmp_path / "pkg")
    changed = _recalibrated(package, tmp_path / "doc", lambda m: m.update(description="reworded"))
    assert model_key(load_package(package)) == model_key(load_package(changed))


def test_old_cache_format_is_refused_not_trusted(tmp_path, images):
    package = make_package(tmp_path / "pkg")
    cache = tmp_path / "old.db"
    with sqlite3.connect(cache) as db:
        db.execute(
            "CREATE TABLE scores (package_hash TEXT, path TEXT, size INTEGER, mtime_ns INTEGER, content_hash TEXT, "
            "iaa REAL, iqa REAL, ista REAL, width INTEGER, height INTEGER, scored_at REAL, PRIMARY KEY (package_hash, path))"
        )
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute("PRAGMA user_version = 1")
    before = cache.read_bytes()
    run = score("-m", package, images, "--cache", cache, "--jsonl", code=2)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and str(cache) in lines[0] and "cannot be trusted" in lines[0]
    assert run.stdout == "" and cache.read_bytes() == before
