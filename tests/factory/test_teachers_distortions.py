"""Distortion library: determinism, shapes, and iqa-teacher ladders that fall with every level."""

import numpy as np
import pytest
from _teachers_fixtures import PHOTOS, corpus_photo

from export.common.distortions import HELDOUT_KINDS, KINDS, LEVELS, TRAIN_KINDS, apply_distortion
from export.teachers import load_teacher
from perceptlite.datasets.metrics import srcc


@pytest.fixture(scope="module")
def photos():
    return [corpus_photo(p, max_side=192) for p in PHOTOS[:2]]


@pytest.fixture(scope="module")
def iqa_teacher():
    return load_teacher("iqa-synthetic")


def test_kinds_are_split_into_train_and_heldout():
    assert set(TRAIN_KINDS) | set(HELDOUT_KINDS) == set(KINDS)
    assert not set(TRAIN_KINDS) & set(HELDOUT_KINDS)
    assert len(TRAIN_KINDS) >= 12 and len(HELDOUT_KINDS) >= 2


@pytest.mark.parametrize("kind", list(KINDS))
def test_distortion_is_deterministic_and_keeps_size(photos, kind):
    image = photos[0]
    a = apply_distortion(image, kind, 3, seed=11)
    b = apply_distortion(image, kind, 3, seed=11)
    assert a.size == image.size and a.mode == "RGB"
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(image))


def test_seed_changes_random_kinds(photos):
    a = np.asarray(apply_distortion(photos[0], "gaussian_noise", 2, seed=1))
    b = np.asarray(apply_distortion(photos[0], "gaussian_noise", 2, seed=2))
    assert not np.array_equal(a, b)


def test_bad_kind_or_level_is_refused(photos):
    with pytest.raises(ValueError, match="unknown distortion kind"):
        apply_distortion(photos[0], "sepia", 1, 0)
    with pytest.raises(ValueError, match="level"):
        apply_distortion(photos[0], "jpeg", 6, 0)


@pytest.mark.parametrize("kind", list(KINDS))
def test_iqa_ladder_falls_with_level(photos, iqa_teacher, kind):
    for image in photos:
        scores = [iqa_teacher.label(apply_distortion(image, kind, level, seed=5), image)["iqa"] for level in LEVELS]
        assert all(s < 100 for s in scores), (kind, scores)
        assert all(b < a for a, b in zip(scores, scores[1:])), (kind, scores)
        assert srcc(LEVELS, scores) == pytest.approx(-1.0)
