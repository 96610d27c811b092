"""Memory counts every view of an image (issue 23, class 7): the whole view and each crop, in the
bound on --batch-size and in the decode reservation. Peak numbers: bench/bench_memory.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _runtime_fixtures import make_package, make_two_view_package
from PIL import Image

from perceptlite.backends.preprocess import input_bytes
from perceptlite.images.decode import DecodeError, Views, decode_file
from perceptlite.images.memory import DECODE_MEMORY, decode_cost
from perceptlite.package.manifest import load_package

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
ACTIVATION_FACTOR = 24  # perceptlite/cli/score.py


def _lowered_to(package: Path, photos: Path) -> int:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "perceptlite",
            "score",
            "-m",
            package,
            photos,
            "--jsonl",
            "--batch-size",
            "1000000",
            "--decode-memory",
            "64",
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return int(re.search(r"using (\d+)", run.stderr).group(1))


def test_the_batch_bound_counts_the_crops_as_well_as_the_whole_view(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(3):
        Image.fromarray(np.random.default_rng(index).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(photos / f"{index}.png")
    whole_only = make_package(tmp_path / "one-view", size=(32, 32))
    with_crops = make_two_view_package(tmp_path / "two-view", crop=16)  # 32 x 32 view and five 16 x 16 crops
    per_view = 3 * 4 * ACTIVATION_FACTOR
    assert _lowered_to(whole_only, photos) == (64 << 20) // (32 * 32 * per_view)
    assert _lowered_to(with_crops, photos) == (64 << 20) // ((32 * 32 + 5 * 16 * 16) * per_view)


def test_input_bytes_of_the_bundled_model_are_its_four_views():
    package = load_package(REPO / "models" / "perceptlite-base")
    assert input_bytes(package.input) == 4 * 3 * 224 * 224 * 4


def test_views_are_made_while_the_decode_holds_its_reservation(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(path)
    held: list[int] = []

    def make(image, box):
        held.append(DECODE_MEMORY.in_use)
        return np.asarray(image).mean()

    decoded = decode_file(path, views=Views(make, bytes=12345))
    with Image.open(path) as image:
        expected = decode_cost(image) + 12345
    assert held and held[0] >= expected
    assert decoded.prepared == np.asarray(decoded.image).mean()
    assert DECODE_MEMORY.in_use == 0


def test_a_view_that_fails_is_an_error_record_not_a_traceback(tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (40, 30)).save(path)

    def make(image, box):
        raise ValueError("cannot\nresize")

    with pytest.raises(DecodeError, match=r"^cannot process image \(cannot resize\)$"):
        decode_file(path, views=Views(make))
    assert DECODE_MEMORY.in_use == 0
