"""Native-resolution crops: where they are cut, how they reach a two-input graph, and the manifest's word."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from _runtime_fixtures import make_two_view_package
from PIL import Image

from perceptlite import Scorer
from perceptlite.backends.preprocess import crop_boxes, draft_size, prepare_crops, working_scale
from perceptlite.package.manifest import CropSpec, ModelPackageError, load_package

PLUS = ((0, 1), (1, 0), (1, 1), (1, 2), (2, 1))


def test_crop_boxes_sit_on_grid_cells_inside_the_image():
    spec = CropSpec(size=224, grid=(3, 3), cells=PLUS)
    boxes = crop_boxes(4000, 2500, spec)
    assert len(boxes) == 5
    for left, top, right, bottom in boxes:
        assert right - left == 224 and bottom - top == 224
        assert 0 <= left and right <= 4000 and 0 <= top and bottom <= 2500
    centre = boxes[2]
    assert ((centre[0] + centre[2]) / 2, (centre[1] + centre[3]) / 2) == (2000, 1250)
    # 500 px: the edge cells' crops are pushed inwards to the borders.
    small = crop_boxes(500, 500, spec)
    assert small[1][0] == 0 and small[3][2] == 500


def test_every_cell_by_default():
    assert len(crop_boxes(640, 480, CropSpec(size=100, grid=(2, 3)))) == 6


def test_small_images_are_enlarged_before_cropping(tiny_two_view):
    package = load_package(tiny_two_view)
    crops = prepare_crops(Image.new("RGB", (10, 7), (255, 0, 0)), package.input)
    assert crops.shape == (5, 3, 16, 16)
    assert np.allclose(crops[:, 0], 1.0, atol=0.02)  # red, normalised with mean/std 0.5


def test_crops_keep_every_pixel_of_large_images(tiny_two_view, tmp_path):
    """A crop model decodes at full resolution (no JPEG draft) and sees the native pixels."""
    package = load_package(tiny_two_view)
    assert draft_size(package.input) is None
    rng = np.random.default_rng(0)
    noisy = np.clip(128 + rng.normal(0, 60, (600, 900, 3)), 0, 255).astype(np.uint8)
    path = tmp_path / "noisy.png"
    Image.fromarray(noisy).save(path)
    result = Scorer(tiny_two_view, device="cpu").score(str(path))
    expected = np.mean(
        [(noisy[top:bottom, left:right] / 255.0 - 0.5) / 0.5 for left, top, right, bottom in crop_boxes(900, 600, package.input.crops)]
    )
    assert result.iqa == pytest.approx(100 / (1 + np.exp(-expected)), abs=1e-3)
    assert (result.width, result.height) == (900, 600)


def test_crops_of_photos_over_the_working_size_see_it_downscaled(tiny_two_view):
    """With `max_side`, a large photo's crops are those of the photo resized to its working size."""
    spec = load_package(tiny_two_view).input
    capped = dataclasses.replace(spec, crops=dataclasses.replace(spec.crops, max_side=120))
    rng = np.random.default_rng(2)
    photo = Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8))
    working = photo.resize((120, 80), Image.Resampling.BICUBIC)
    assert np.allclose(prepare_crops(photo, capped), prepare_crops(working, spec), atol=1e-6)
    assert np.array_equal(prepare_crops(working, capped), prepare_crops(working, spec))  # at or under the cap: untouched
    assert not np.allclose(prepare_crops(photo, capped), prepare_crops(photo, spec))


def test_working_size_keeps_the_short_side_at_crop_size():
    crops = CropSpec(size=224, grid=(3, 3), max_side=1536)
    assert working_scale(4000, 3000, crops) == pytest.approx(1536 / 4000)
    assert working_scale(1536, 1000, crops) == 1.0
    assert working_scale(8000, 300, crops) == pytest.approx(224 / 300)  # a panorama: never thinner than a crop
    assert working_scale(150, 100, crops) == pytest.approx(2.24)  # small images are enlarged as before


def test_scores_arrays_paths_and_batches_alike(tiny_two_view, tmp_path):
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, (120 + 10 * i, 90, 3), dtype=np.uint8) for i in range(5)]
    paths = []
    for i, array in enumerate(arrays):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(array).save(paths[-1])
    scorer = Scorer(tiny_two_view, device="cpu", batch_size=3)
    one_by_one = [scorer.score(a) for a in arrays]
    batched = list(scorer.score_many(paths))
    for single, many in zip(one_by_one, batched):
        assert (single.iaa, single.iqa, single.ista) == pytest.approx((many.iaa, many.iqa, many.ista), abs=1e-4)


def _edit_manifest(folder, change):
    manifest_path = folder / "perceptlite.json"
    manifest = json.loads(manifest_path.read_text())
    change(manifest)
    manifest_path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m["input"]["crops"].update(grid=[0, 3]), "grid"),
        (lambda m: m["input"]["crops"].update(size="224"), "size"),
        (lambda m: m["input"]["crops"].update(cells=[[5, 0]]), "cells"),
        (lambda m: m["input"]["crops"].update(max_side=10), "max_side"),
        (lambda m: m["input"]["crops"].update(max_side=True), "max_side"),
    ],
)
def test_bad_crop_specs_are_refused(tmp_path, change, message):
    folder = make_two_view_package(tmp_path / "pkg")
    _edit_manifest(folder, change)
    with pytest.raises(ModelPackageError, match=message):
        load_package(folder)


def test_graph_and_manifest_must_agree_on_crops(tmp_path):
    folder = make_two_view_package(tmp_path / "pkg")
    _edit_manifest(folder, lambda m: m["input"].pop("crops"))
    with pytest.raises(ModelPackageError, match="input.crops"):
        Scorer(folder, device="cpu")
    folder = make_two_view_package(tmp_path / "pkg2")
    _edit_manifest(folder, lambda m: m["input"]["crops"].update(size=20))
    with pytest.raises(ModelPackageError, match="shape"):
        Scorer(folder, device="cpu")


@pytest.fixture(scope="module")
def tiny_two_view(tmp_path_factory):
    return make_two_view_package(tmp_path_factory.mktemp("models") / "two-view")
