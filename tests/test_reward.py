"""The reward helper for image-generation training, on the real bundled model and real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from perceptlite import Scorer
from perceptlite.reward import PerceptualReward

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "models" / "perceptlite-base"
CORPUS = REPO.parent / "shared" / "corpus"


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    if not CORPUS.is_dir():
        pytest.skip(f"{CORPUS} is missing (CI places ../shared beside the clone)")
    return [Image.open(f).convert("RGB") for f in sorted((CORPUS / "bsds500" / "val").glob("*.jpg"))[:3]]


@pytest.fixture(scope="module")
def reward() -> PerceptualReward:
    return PerceptualReward({"iaa": 1.0, "iqa": 3.0}, PACKAGE, device="cpu", threads=2)


def test_one_reward_per_image_from_the_weighted_axes(reward, photos):
    scorer = Scorer(PACKAGE, device="cpu", threads=2)
    arrays = [np.asarray(photo) for photo in photos]
    batch = [photos[0], arrays[1], arrays[2].astype(np.float32) / 255.0]  # PIL, uint8, float in [0, 1]
    rewards = reward(batch)
    assert rewards.shape == (3,) and rewards.dtype == np.float32
    for value, array in zip(rewards, arrays):
        scores = scorer.score(array)
        expected = (1.0 * scores.iaa + 3.0 * scores.iqa) / 4.0 / 100.0
        assert value == pytest.approx(expected, abs=2e-3)  # float input rounds back to the same uint8 pixels
        assert 0.0 <= value <= 1.0
    stacked = reward(np.stack([arrays[1], arrays[1]]))  # one NxHxWx3 array
    assert stacked == pytest.approx([rewards[1]] * 2, abs=1e-5)


def test_blur_lowers_a_quality_reward(photos):
    quality = PerceptualReward({"iqa": 1.0}, PACKAGE, device="cpu", threads=2)
    sharp, blurred = quality([photos[0], photos[0].filter(ImageFilter.GaussianBlur(4))])
    assert sharp > blurred


def test_failed_images_and_bad_weights(reward):
    empty = np.zeros((0, 10, 3), np.uint8)
    assert np.isnan(reward([empty])).tolist() == [True]  # an image with no pixels has no scores
    with pytest.raises(ValueError, match="unknown axis"):
        PerceptualReward({"beauty": 1.0}, PACKAGE)
    with pytest.raises(ValueError, match="non-zero"):
        PerceptualReward({"iaa": 0.0}, PACKAGE)
