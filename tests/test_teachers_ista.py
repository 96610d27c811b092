"""ista teacher: smoothing lowers it, noise is not texture, textured scenes beat flat ones."""

import numpy as np
import pytest
from PIL import Image
from scipy.stats import spearmanr

from export.distortions import LEVELS, apply_distortion
from export.teachers import load_teacher

from _teachers_fixtures import PHOTOS, add_noise, brick_wall, corpus_photo, foliage, sky_gradient


@pytest.fixture(scope="module")
def teacher():
    return load_teacher("ista")


def score(teacher, image):
    return teacher.label(image)["ista"]


@pytest.mark.parametrize("relative", PHOTOS)
def test_edge_preserving_smoothing_lowers_it(teacher, relative):
    photo = corpus_photo(relative, max_side=384)
    ladder = [score(teacher, photo)] + [score(teacher, apply_distortion(photo, "guided_smoothing", lv, 0)) for lv in LEVELS]
    assert ladder[-1] < ladder[0] - 10, ladder
    assert spearmanr(range(len(ladder)), ladder)[0] <= -0.9, ladder


def test_noise_on_a_flat_image_is_not_texture(teacher):
    flat = Image.new("RGB", (320, 240), (128, 128, 128))
    for sigma in (0.02, 0.05, 0.1):
        assert score(teacher, add_noise(flat, sigma)) < 10
        assert score(teacher, add_noise(sky_gradient(), sigma)) < 10


def test_textured_scenes_rate_above_flat_ones(teacher):
    textured = [score(teacher, brick_wall()), score(teacher, foliage())]
    flat = [score(teacher, sky_gradient()), score(teacher, Image.new("RGB", (320, 240), (200, 190, 180)))]
    assert min(textured) > max(flat) + 50, (textured, flat)


def test_scores_are_in_range_and_image_dependent(teacher):
    scores = [score(teacher, corpus_photo(p, max_side=384)) for p in PHOTOS]
    assert all(0.0 <= s <= 100.0 for s in scores)
    assert np.ptp(scores) > 5


def test_describe_points_at_the_calibration(teacher):
    info = teacher.describe()
    assert info["axes"] == ["ista"]
    assert info["calibration"]["images"] >= 100
    assert "--calibrate" in info["calibration"]["command"]
