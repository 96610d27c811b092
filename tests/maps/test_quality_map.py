"""Scorer.quality_map: cells tile the image, each is read like the runtime's crops, on the image's iqa scale."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from _runtime_fixtures import make_package, make_two_view_package
from PIL import Image, ImageFilter

from perceptlite import QualityMap, QualityMapError, Scorer
from perceptlite.backends.preprocess import crop_boxes, prepare_crops, to_tensor
from perceptlite.maps.grid import CropLayout, auto_grid, cell_boxes, crop_layout, crop_origins, parse_grid, to_working_size
from perceptlite.package.manifest import CropSpec, load_package

WALLPAPER = "/usr/share/wallpapers/Path/contents/images/2560x1600.jpg"


@pytest.fixture(scope="module")
def two_view(tmp_path_factory):
    return make_two_view_package(tmp_path_factory.mktemp("models") / "two-view")


@pytest.fixture(scope="module")
def any_count(tmp_path_factory):
    return make_two_view_package(tmp_path_factory.mktemp("models") / "any-count", any_crop_count=True)


@pytest.fixture(scope="module")
def bundled():
    return Scorer(device="cpu")


def _sigmoid_score(grey: float) -> float:
    return 100 / (1 + np.exp(-(grey / 255 - 0.5) / 0.5))


def test_each_cell_is_read_by_the_crop_network_alone(two_view):
    """Tiny graph: iqa = sigmoid(mean of the crops). Cells of one crop each, each a flat grey:
    every cell's iqa is its own grey's, and the image's iqa is the runtime's."""
    greys = np.arange(24, dtype=np.float64).reshape(4, 6) * 10
    pixels = np.kron(greys, np.ones((16, 16))).astype(np.uint8)
    image = np.repeat(pixels[:, :, None], 3, axis=2)
    scorer = Scorer(two_view, device="cpu")
    quality = scorer.quality_map(image)
    assert isinstance(quality, QualityMap)
    assert quality.grid == (4, 6) and (quality.width, quality.height) == (96, 64)
    assert quality.iqa == pytest.approx(scorer.score(image).iqa, abs=1e-9)
    assert quality.values() == pytest.approx(np.vectorize(_sigmoid_score)(greys), abs=1e-3)
    assert quality.cells[7].box == (16, 16, 32, 32)


def test_a_graph_taking_any_number_of_crops_reads_each_cell_by_its_own_crops(any_count):
    """Same flat-grey cells through a graph whose crop count is free: one crop per cell, each cell's
    own grey; a coarser grid's cells are read by the crops tiling them (still one grey each)."""
    scorer = Scorer(any_count, device="cpu")
    assert scorer.backend.crop_views is None
    greys = np.arange(24, dtype=np.float64).reshape(4, 6) * 10
    image = np.repeat(np.kron(greys, np.ones((16, 16))).astype(np.uint8)[:, :, None], 3, axis=2)
    quality = scorer.quality_map(image)
    assert quality.iqa == pytest.approx(scorer.score(image).iqa, abs=1e-9)
    assert quality.values() == pytest.approx(np.vectorize(_sigmoid_score)(greys), abs=1e-3)
    coarse = scorer.quality_map(image, grid=(2, 3)).values()  # 2 x 2 crops per 32 x 32 cell
    expected = np.vectorize(_sigmoid_score)(greys.reshape(2, 2, 3, 2).mean(axis=(1, 3)))
    assert coarse == pytest.approx(expected, abs=1e-3)


def test_crop_layout_follows_the_graph():
    crops = CropSpec(size=224, grid=(3, 3), max_side=1536)
    assert crop_layout(256, 230, crops, fixed_views=None) == CropLayout(1, 1, diagonal=False)  # a default cell
    assert crop_layout(768, 576, crops, fixed_views=None) == CropLayout(3, 3, diagonal=False)
    assert crop_layout(100, 100, crops, fixed_views=None) == CropLayout(1, 1, diagonal=False)
    assert crop_layout(256, 230, crops, fixed_views=3) == CropLayout(3, 3, diagonal=True)


def test_the_bundled_graph_pools_one_crop_as_it_pools_the_same_crop_three_times(bundled):
    """Why one crop may read a default cell: K copies of a crop give the iqa of the crop alone."""
    assert bundled.backend.crop_views is None  # the bundled graph takes any number of crops
    photo = Image.open(WALLPAPER).convert("RGB")
    whole, crops = bundled.backend.prepare(photo)
    one = bundled.backend.infer([(whole, crops[:1])])[0]["iqa"]
    thrice = bundled.backend.infer([(whole, np.repeat(crops[:1], 3, axis=0))])[0]["iqa"]
    assert one == pytest.approx(thrice, abs=1e-3)
    assert abs(one - bundled.backend.infer([(whole, crops[1:2])])[0]["iqa"]) > 1e-3  # another crop reads differently


def test_cells_tile_the_image_in_its_own_pixels():
    boxes = cell_boxes(1001, 667, (3, 4))
    assert len(boxes) == 12
    area = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in boxes)
    assert area == 1001 * 667
    assert boxes[0][:2] == (0, 0) and boxes[-1][2:] == (1001, 667)


def test_default_cells_are_at_least_one_crop_at_the_working_scale():
    crops = CropSpec(size=224, grid=(3, 3), max_side=1536)
    assert auto_grid(4000, 3000, crops) == (5, 6)  # working size 1536 x 1152
    assert auto_grid(1280, 800, crops) == (3, 5)
    assert auto_grid(100, 60, crops) == (1, 1)  # enlarged to one crop
    # A wide cell: its crops spread inside it; a narrow one: all centred on it.
    assert crop_origins(0, 300, 224, 1000, 3) == [0, 38, 76]
    assert crop_origins(400, 500, 224, 1000, 3) == [338, 338, 338]
    assert crop_origins(900, 1000, 224, 1000, 3) == [776, 776, 776]  # kept inside the image


def test_cells_see_the_pixels_the_runtime_crops_see(two_view):
    """One resize of the whole photo to its working size gives the crops prepare_crops cuts."""
    spec = load_package(two_view).input
    capped = dataclasses.replace(spec, crops=dataclasses.replace(spec.crops, max_side=120))
    photo = Image.fromarray(np.random.default_rng(3).integers(0, 256, (200, 300, 3), dtype=np.uint8))
    working = to_working_size(photo, capped)
    assert working.size == (120, 80)
    cut = np.stack([to_tensor(working.crop(box), capped) for box in crop_boxes(120, 80, capped.crops)])
    assert np.allclose(cut, prepare_crops(photo, capped), atol=1e-6)


def test_a_blurred_half_reads_lower_with_the_bundled_model(bundled, tmp_path):
    photo = Image.open(WALLPAPER).convert("RGB").resize((1280, 800), Image.Resampling.LANCZOS)
    left = photo.crop((0, 0, 640, 800)).filter(ImageFilter.GaussianBlur(4))
    photo.paste(left, (0, 0))
    path = tmp_path / "half.png"
    photo.save(path)
    quality = bundled.quality_map(str(path))
    assert quality.path == str(path) and quality.grid == (3, 5)
    assert quality.iqa == pytest.approx(bundled.score(str(path)).iqa, abs=1e-6)
    values = quality.values()
    assert values[:, :2].max() < values[:, 3:].min()
    assert all(0 <= cell.iqa <= 100 for cell in quality.cells)


def test_json_form_has_exactly_the_documented_fields(two_view):
    quality = Scorer(two_view, device="cpu").quality_map(np.zeros((40, 50, 3), np.uint8), grid=(2, 3))
    record = json.loads(json.dumps(quality.as_dict()))
    assert list(record) == ["path", "width", "height", "iqa", "grid", "cells"]
    assert record["grid"] == [2, 3] and len(record["cells"]) == 6
    assert list(record["cells"][0]) == ["box", "iqa"] and record["cells"][0]["box"] == [0, 0, 17, 20]


def test_a_package_without_crops_cannot_make_a_map(tmp_path):
    scorer = Scorer(make_package(tmp_path / "plain"), device="cpu")
    with pytest.raises(QualityMapError, match="reads no native-resolution crops"):
        scorer.quality_map(np.zeros((64, 64, 3), np.uint8))


def test_grids_are_checked(two_view):
    assert parse_grid("6x8") == (6, 8) and parse_grid(" 2X3 ") == (2, 3)
    for text in ("6", "0x3", "axb", "100x100"):
        with pytest.raises(QualityMapError, match="ROWSxCOLS"):
            parse_grid(text)
    with pytest.raises(QualityMapError, match="does not fit"):
        Scorer(two_view, device="cpu").quality_map(np.zeros((10, 10, 3), np.uint8), grid=(20, 2))


def test_boxes_are_in_the_upright_picture(two_view, tmp_path):
    """An EXIF-rotated JPEG is mapped upright: width, height and boxes are those of the picture as shown."""
    stored = Image.fromarray(np.random.default_rng(4).integers(0, 256, (40, 64, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees: 40 wide, 64 high
    path = tmp_path / "rotated.jpg"
    stored.save(path, exif=exif)
    quality = Scorer(two_view, device="cpu").quality_map(str(path))
    assert (quality.width, quality.height) == (40, 64) and quality.grid == (4, 2)
    assert quality.cells[-1].box == (20, 48, 40, 64)
