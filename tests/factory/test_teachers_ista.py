"""ista teacher: smoothing lowers it, noise is not texture, textured scenes beat flat ones."""

import numpy as np
import pytest
from _teachers_fixtures import PHOTOS, add_noise, brick_wall, corpus_photo, foliage, sky_gradient
from PIL import Image

from export.common.distortions import LEVELS, apply_distortion
from export.teachers import load_teacher
from perceptlite.datasets.metrics import srcc


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
    assert srcc(range(len(ladder)), ladder) <= -0.9, ladder


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


@pytest.mark.parametrize("kind", ["colour_noise", "salt_pepper", "gaussian_noise", "jpeg"])
def test_distortions_never_add_structure(teacher, kind):
    photo = corpus_photo(PHOTOS[0], max_side=384)
    clean = score(teacher, photo)
    for level in (1, 5):
        result = teacher.label(apply_distortion(photo, kind, level, 0), photo)
        assert result["ista"] <= clean + 1e-9
        assert result["ista_reference"] == pytest.approx(clean)
        assert result["ista"] == min(result["ista_image"], result["ista_reference"])


def test_blur_with_reference_still_lowers_it(teacher):
    photo = corpus_photo(PHOTOS[2], max_side=384)
    blurred = teacher.label(apply_distortion(photo, "gaussian_blur", 4, 0), photo)
    assert blurred["ista"] < score(teacher, photo) - 10


# Corpus photos picked by eye: an owl in grass, a lizard on gravel, carved stone, blossoming branches vs. birds and a
# paraglider against clear sky.
TEXTURED_PHOTOS = ("bsds500/train/8143.jpg", "bsds500/train/87065.jpg", "bsds500/val/33039.jpg", "imagenet-sample/n01608432_kite.JPEG")
FLAT_PHOTOS = ("bsds500/train/135069.jpg", "bsds500/train/60079.jpg", "imagenet-sample/n01614925_bald_eagle.JPEG")


def test_textured_photos_rate_above_sky_photos(teacher):
    textured = [score(teacher, corpus_photo(p, max_side=512)) for p in TEXTURED_PHOTOS]
    flat = [score(teacher, corpus_photo(p, max_side=512)) for p in FLAT_PHOTOS]
    assert min(textured) > 80 and max(flat) < 20, (textured, flat)
