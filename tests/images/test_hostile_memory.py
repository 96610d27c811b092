"""Memory is bounded, not only pixels (issue 12, class 6). Peak numbers: bench/bench_memory.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _runtime_fixtures import tiny_package  # noqa: F401  (pytest fixture)
from PIL import Image

from perceptlite.images.memory import DecodeBudget
from perceptlite.scorer import Scorer

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def score(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "perceptlite", "score", *map(str, args)], env=ENV, capture_output=True, text=True, timeout=300
    )


def records(run: subprocess.CompletedProcess) -> dict[str, dict]:
    return {Path(r["path"]).name: r for r in map(json.loads, run.stdout.splitlines())}


@pytest.fixture(scope="module")
def big_webp(tmp_path_factory) -> Path:
    """A real 4000 x 4000 WebP: about 0.3 GB to decode with Pillow."""
    path = tmp_path_factory.mktemp("big") / "big.webp"
    Image.new("RGB", (4000, 4000), (60, 120, 180)).save(path, quality=80)
    return path


def test_an_image_above_the_budget_is_refused_clearly_and_the_run_goes_on(tiny_package, big_webp, tmp_path):
    Image.new("RGB", (40, 30), (1, 2, 3)).save(tmp_path / "small.png")
    os.link(big_webp, tmp_path / "big.webp")
    run = score("-m", tiny_package, tmp_path, "--jsonl", "--decode-memory", "128")
    assert run.returncode == 1, run.stderr
    found = records(run)
    assert found["small.png"]["error"] is None
    error = found["big.webp"]["error"]
    assert "4000x4000 WEBP" in error and "decode memory budget" in error and "--decode-memory" in error
    allowed = score("-m", tiny_package, tmp_path, "--jsonl", "--decode-memory", "2048")
    assert allowed.returncode == 0 and records(allowed)["big.webp"]["iaa"] is not None


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "I;16"])
@pytest.mark.parametrize("orientation", [1, 6])
def test_reduced_decoding_gives_the_same_scores(tiny_package, tmp_path, mode, orientation):
    """Big images are box-reduced right after decoding; the model input is exactly what the resize made before."""
    rng = np.random.default_rng(7)
    pixels = Image.fromarray(rng.integers(0, 256, (90, 70, 3), dtype=np.uint8)).resize((1750, 2250), Image.Resampling.BICUBIC)
    image = pixels if mode == "RGB" else pixels.convert("RGBA" if mode == "RGBA" else "L" if mode in ("L", "I;16") else mode)
    if mode == "I;16":
        image = Image.fromarray((np.asarray(image, dtype=np.uint16) * 257).astype(np.uint16))
    path = tmp_path / "x.png"
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, exif=exif)
    scorer = Scorer(tiny_package, device="cpu")
    from_file = scorer.score(str(path))  # decoded, reduced, then resized
    with Image.open(path) as opened:
        opened.load()
        from_memory = scorer.score(opened)  # the same image through the in-memory path: no reduction
    assert from_file.error is None and (from_file.width, from_file.height) == (from_memory.width, from_memory.height)
    assert (from_file.iaa, from_file.iqa, from_file.ista) == (from_memory.iaa, from_memory.iqa, from_memory.ista)


def test_the_budget_serialises_big_decodes():
    budget = DecodeBudget(100)
    with budget.reserve(60, lambda cost, capacity: ValueError()):
        assert budget.in_use == 60
    with pytest.raises(ValueError):
        with budget.reserve(101, lambda cost, capacity: ValueError(f"{cost} > {capacity}")):
            pass
    assert budget.in_use == 0


def test_a_huge_batch_size_is_lowered_with_a_note(tiny_package, tmp_path):
    for index in range(3):
        Image.new("RGB", (20, 20), (index, 0, 0)).save(tmp_path / f"{index}.png")
    run = score("-m", tiny_package, tmp_path, "--jsonl", "--batch-size", "1000000", "--decode-memory", "64")
    assert run.returncode == 0, run.stderr
    assert "--batch-size 1000000" in run.stderr and "using" in run.stderr
    assert len(run.stdout.splitlines()) == 3
