"""Full-reference measures and the iqa-synthetic teacher: known properties on real photos."""

import numpy as np
import pytest
from _teachers_fixtures import PHOTOS, add_noise, corpus_photo

from export.common.distortions import apply_distortion
from export.teachers import load_teacher
from export.teachers.fr_metrics import gmsd, haarpsi, ms_ssim


@pytest.fixture(scope="module")
def photo():
    return corpus_photo(PHOTOS[1], max_side=256)


def test_identical_images_score_perfect(photo):
    x = np.asarray(photo)
    assert ms_ssim(x, x) == pytest.approx(1.0, abs=1e-9)
    assert gmsd(x, x) == pytest.approx(0.0, abs=1e-9)
    assert haarpsi(x, x) == pytest.approx(1.0, abs=1e-9)


def test_measures_worsen_with_noise(photo):
    x = np.asarray(photo)
    mild, strong = np.asarray(add_noise(photo, 0.02)), np.asarray(add_noise(photo, 0.1))
    assert 1.0 > ms_ssim(x, mild) > ms_ssim(x, strong) > 0.0
    assert 0.0 < gmsd(x, mild) < gmsd(x, strong)
    assert 1.0 > haarpsi(x, mild) > haarpsi(x, strong) > 0.0


def test_measures_are_symmetric_enough(photo):
    x, y = np.asarray(photo), np.asarray(apply_distortion(photo, "jpeg", 3, 0))
    assert ms_ssim(x, y) == pytest.approx(ms_ssim(y, x), abs=1e-9)
    assert gmsd(x, y) == pytest.approx(gmsd(y, x), abs=1e-9)
    assert haarpsi(x, y) == pytest.approx(haarpsi(y, x), abs=1e-9)


def test_haarpsi_sees_colour_that_luminance_measures_miss(photo):
    x = np.asarray(photo)
    grey = np.asarray(apply_distortion(photo, "desaturation", 5, 0))
    assert ms_ssim(x, grey) > 0.99
    assert haarpsi(x, grey) < 0.8


def test_teacher_gives_clean_images_the_top_score(photo):
    teacher = load_teacher("iqa-synthetic")
    assert teacher.axes == ("iqa",)
    assert teacher.label(photo)["iqa"] == 100.0
    assert teacher.label(photo, photo.copy())["iqa"] == 100.0
    distorted = teacher.label(apply_distortion(photo, "gaussian_blur", 2, 0), photo)
    assert 0.0 <= distorted["iqa"] < 100.0
    assert {"ms_ssim", "gmsd", "haarpsi"} <= set(distorted)


def test_teacher_refuses_mismatched_reference(photo):
    teacher = load_teacher("iqa-synthetic")
    with pytest.raises(ValueError, match="size"):
        teacher.label(photo, photo.resize((64, 64)))


def test_describe_names_the_mapping():
    info = load_teacher("iqa-synthetic").describe()
    assert "HaarPSI" in info["mapping"] and info["axes"] == ["iqa"]
