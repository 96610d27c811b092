"""The library keeps the CLI's checks (issue 23, class 8): PerceptualReward's weights and batches,
Scorer's counts, and eval's ground truth are checked with a clear error, never a silent wrong number."""

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

from perceptlite.reward import PerceptualReward
from perceptlite.scorer import ScoreOptions, Scorer

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


@pytest.mark.parametrize(
    "weights",
    [
        {"iaa": float("nan")},
        {"iaa": 1.0, "iqa": float("inf")},
        {"iqa": -float("inf")},
        {"iaa": 1e308, "iqa": 1e308},  # each finite, the sum overflows
        {"iaa": 10**400},
        {"iaa": "1"},
        {"iaa": True},
        {"iaa": np.float32("nan")},
    ],
    ids=["nan", "inf", "minus-inf", "sum-overflows", "huge-int", "text", "bool", "numpy-nan"],
)
def test_reward_refuses_weights_that_are_not_finite_numbers(tiny_package, weights):
    with pytest.raises(ValueError, match="weight"):
        PerceptualReward(weights, tiny_package)


def test_reward_refuses_weights_too_large_to_sum_safely(tiny_package):
    with pytest.raises(ValueError, match="magnitude"):
        PerceptualReward({"iaa": 1e300, "iqa": 3e300}, tiny_package)


@pytest.mark.parametrize("shape", [(48, 64, 3), (48, 64)], ids=["one-hxwx3-image", "one-gray-image"])
def test_reward_reads_one_array_as_one_image_never_as_h_images(tiny_package, shape):
    reward = PerceptualReward(None, tiny_package)
    rewards = reward(np.full(shape, 128, np.uint8))
    assert rewards.shape == (1,) and np.isfinite(rewards).all()


def test_reward_refuses_an_array_of_more_than_four_dimensions(tiny_package):
    reward = PerceptualReward(None, tiny_package)
    with pytest.raises(ValueError, match="NxHxWx3"):
        reward(np.zeros((2, 3, 48, 64, 3), np.uint8))


def test_reward_of_an_nxhxwx3_array_and_of_a_list_agree(tiny_package):
    rng = np.random.default_rng(1)
    batch = rng.integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
    reward = PerceptualReward(None, tiny_package)
    from_array, from_list = reward(batch), reward(list(batch))
    assert from_array.shape == (3,) and np.array_equal(from_array, from_list)


@pytest.mark.parametrize("name", ["jobs", "batch_size", "threads", "decode_memory", "max_pixels"])
@pytest.mark.parametrize("value", [0, -1, 2.5, True, "4"])
def test_scorer_refuses_counts_the_cli_refuses(tiny_package, name, value):
    with pytest.raises(ValueError, match=name):
        Scorer(tiny_package, **{name: value})
    with pytest.raises(ValueError, match=name):
        ScoreOptions(**{name: value})


def test_scorer_takes_the_smallest_valid_counts(tiny_package, tmp_path):
    image = tmp_path / "a.png"
    Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(image)
    result = Scorer(tiny_package, jobs=1, batch_size=1, threads=1).score(str(image))
    assert result.ok and result.width == 20


def _vr_set(tmp_path: Path, scores: list) -> tuple[Path, Path]:
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(2)
    records = []
    for index, score in enumerate(scores):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(images / f"{index}.png")
        records.append(f'{{"image": "{index}.png", "gt_score": {score}}}')
    vr = tmp_path / "vr.json"
    vr.write_text("[" + ", ".join(records) + "]")
    return vr, images


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity", "1e999", '"nan"', "true", "null", "9" * 400])
def test_eval_refuses_ground_truth_that_is_not_a_finite_number(tiny_package, tmp_path, bad):
    vr, images = _vr_set(tmp_path, [10, 20, bad, 40])
    run = subprocess.run(
        [sys.executable, "-m", "perceptlite", "eval", vr, "--images", images, "-m", tiny_package],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr and run.stdout == "", run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and str(vr) in lines[0] and ("record 3" in lines[0] or "not a JSON list" in lines[0]), run.stderr


def test_eval_with_finite_ground_truth_counts_every_image(tiny_package, tmp_path):
    vr, images = _vr_set(tmp_path, [10, 20, 30.5, 40])
    run = subprocess.run(
        [sys.executable, "-m", "perceptlite", "eval", vr, "--images", images, "-m", tiny_package, "--json"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert all(row["count"] == 4 and row["failed"] == 0 for row in json.loads(run.stdout))
