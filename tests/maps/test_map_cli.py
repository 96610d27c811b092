"""`perceptlite map`: the PNG and JSON per image, collision-safe names, nothing replaced unasked, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _runtime_fixtures import make_package, make_two_view_package
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def _map(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "perceptlite", "map", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def two_view(tmp_path_factory) -> Path:
    return make_two_view_package(tmp_path_factory.mktemp("models") / "two-view")


@pytest.fixture
def photos(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    for name, size in (("a/x.jpg", (64, 96)), ("b/x.png", (48, 48)), ("c/y.webp", (80, 40))):
        path = tmp_path / "in" / name
        path.parent.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return tmp_path / "in"


def test_each_image_gets_a_png_and_a_json(two_view, photos, tmp_path):
    run = _map(photos, "-o", tmp_path / "out", "-m", two_view, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["x-1.map.json", "x-1.map.png", "x.map.json", "x.map.png", "y.map.json", "y.map.png"]
    record = json.loads((tmp_path / "out" / "x.map.json").read_text())
    assert list(record) == ["path", "width", "height", "iqa", "grid", "cells"]
    assert record["path"] == str(photos / "a" / "x.jpg") and (record["width"], record["height"]) == (96, 64)
    assert record["grid"] == [4, 6] and len(record["cells"]) == 24
    assert record["cells"][-1]["box"] == [80, 48, 96, 64]
    assert all(0 <= cell["iqa"] <= 100 for cell in record["cells"])
    drawn = Image.open(tmp_path / "out" / "x.map.png")
    assert drawn.width == 640 and drawn.height > 640 * 64 / 96  # enlarged to be readable, the legend below
    assert "x-1.map.png" in run.stderr and "3 maps written" in run.stderr
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "out" / "x.map.json").stat().st_mode & 0o777 == 0o666 & ~umask  # like any new file


def test_nothing_is_replaced_unless_asked(two_view, photos, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "y.map.png").write_bytes(b"mine")
    run = _map(photos / "c", "-o", out, "-m", two_view, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert (out / "y.map.png").read_bytes() == b"mine"
    assert (out / "y-1.map.png").exists() and (out / "y-1.map.json").exists() and not (out / "y.map.json").exists()
    again = _map(photos / "c", "-o", out, "-m", two_view, "--overwrite", "--grid", "2x3", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (out / "y.map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "y.map.json").read_text())["grid"] == [2, 3]
    assert not [name for name in os.listdir(out) if name.endswith(".tmp")]


def test_a_bad_file_is_one_line_and_exit_1(two_view, photos, tmp_path):
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    run = _map(photos, "-o", tmp_path / "out", "-m", two_view, cwd=tmp_path)
    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if line.startswith("perceptlite:")]
    assert errors == [f"perceptlite: {photos / 'broken.jpg'}: not an image, or a format Pillow cannot read"]
    assert len(list((tmp_path / "out").glob("*.map.json"))) == 3


def test_usage_and_model_errors_exit_2(two_view, photos, tmp_path):
    plain = make_package(tmp_path / "plain")
    run = _map(photos, "-o", tmp_path / "out", "-m", plain, cwd=tmp_path)
    assert run.returncode == 2 and "reads no native-resolution crops" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    bad_grid = _map(photos, "-o", tmp_path / "out", "-m", two_view, "--grid", "6", cwd=tmp_path)
    assert bad_grid.returncode == 2 and "ROWSxCOLS" in bad_grid.stderr
    (tmp_path / "empty").mkdir()
    empty = _map(tmp_path / "empty", "-o", tmp_path / "out", "-m", two_view, cwd=tmp_path)
    assert empty.returncode == 2 and "no image files found" in empty.stderr
    (tmp_path / "file").write_text("")
    not_a_folder = _map(photos, "-o", tmp_path / "file", "-m", two_view, cwd=tmp_path)
    assert not_a_folder.returncode == 2 and "Traceback" not in not_a_folder.stderr
