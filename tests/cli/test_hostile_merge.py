"""`merge` refuses what the cache would refuse (issue 23, class 3): shards scored with another weight
variant or calibration of one package are not mixed; runs the cache would share merge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _runtime_fixtures import make_package
from PIL import Image

from perceptlite.package.manifest import MANIFEST_NAME, write_package

pytest.importorskip("pyarrow")

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perceptlite", *map(str, args)], env=ENV, capture_output=True, text=True, timeout=120)


@pytest.fixture()
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for index in range(12):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    return folder


@pytest.fixture()
def package(tmp_path) -> Path:
    return make_package(tmp_path / "pkg", int8_variant=True)


def _copy_with(source: Path, folder: Path, change) -> Path:
    """The same weight files under a changed manifest."""
    folder.mkdir()
    manifest = json.loads((source / MANIFEST_NAME).read_text())
    for name in manifest["files"]:
        (folder / name).write_bytes((source / name).read_bytes())
    manifest["files"] = list(manifest["files"])
    change(manifest)
    return write_package(folder, manifest, "# changed\n")


def _shards(images: Path, tmp_path: Path, first: list, second: list) -> list[Path]:
    shards = []
    for index, options in enumerate((first, second)):
        shard = tmp_path / f"shard{index}.parquet"
        run = cli("score", images, *options, "--shard", f"{index}/2", "-o", shard, "-q")
        assert run.returncode == 0, run.stderr
        shards.append(shard)
    return shards


def _refused(run: subprocess.CompletedProcess, merged: Path) -> str:
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and not merged.exists(), run.stderr
    return lines[0]


def test_shards_of_two_weight_variants_are_refused(package, images, tmp_path):
    shards = _shards(images, tmp_path, ["-m", package, "--variant", "fp32"], ["-m", package, "--variant", "int8"])
    merged = tmp_path / "all.jsonl"
    line = _refused(cli("merge", *shards, "-o", merged), merged)
    assert "variant" in line and str(shards[1]) in line


@pytest.mark.parametrize(
    "change",
    [lambda m: m["outputs"]["iaa"]["calibration"].update(scale=50.0), lambda m: m["input"].update(interpolation="bilinear")],
    ids=["calibration", "input-spec"],
)
def test_shards_of_a_recalibrated_copy_are_refused(package, images, tmp_path, change):
    changed = _copy_with(package, tmp_path / "changed", change)
    shards = _shards(images, tmp_path, ["-m", package], ["-m", changed])
    merged = tmp_path / "all.parquet"
    _refused(cli("merge", *shards, "-o", merged), merged)


def test_runs_the_cache_would_share_merge(package, images, tmp_path):
    reworded = _copy_with(package, tmp_path / "reworded", lambda m: m.update(description="reworded"))
    shards = _shards(images, tmp_path, ["-m", package], ["-m", reworded, "--variant", "fp32"])  # fp32 is the default
    merged = tmp_path / "all.jsonl"
    run = cli("merge", *shards, "-o", merged, "--check", images)
    assert run.returncode == 0, run.stderr
    assert len(merged.read_text().splitlines()) == 12
