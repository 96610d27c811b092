"""The shipped default model package models/perceptlite-base: hashes, manifest, and sane scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from perceptlite.manifest import AXES, load_package, sha256_file

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "models" / "perceptlite-base"
CORPUS = REPO.parent / "shared" / "corpus"


def _photos() -> list[Image.Image]:
    """A few real photos from the corpus, or synthetic textured images when it is absent."""
    if CORPUS.is_dir():
        files = sorted((CORPUS / "bsds500" / "test").glob("*.jpg"))[:4]
        return [Image.open(f).convert("RGB") for f in files]
    rng = np.random.default_rng(0)
    photos = []
    for seed in range(4):
        y, x = np.mgrid[0:240, 0:320]
        stripes = 127 + 100 * np.sin(x / (3 + seed) + y / (5 + seed))
        noise = rng.normal(0, 20, (240, 320))
        grey = np.clip(stripes + noise, 0, 255)
        photos.append(Image.fromarray(np.stack([grey, grey * 0.8, 255 - grey], -1).astype(np.uint8)))
    return photos


@pytest.fixture(scope="module")
def package():
    return load_package(PACKAGE)


@pytest.fixture(scope="module")
def scorer(package):
    from perceptlite import Scorer

    return Scorer(package, threads=1)


def test_hashes_and_manifest(package):
    for name, entry in package.files.items():
        assert sha256_file(PACKAGE / name) == entry["sha256"]
        assert (PACKAGE / name).stat().st_size == entry["bytes"]
    assert package.name == "perceptlite-base"
    assert package.backend == "onnx"
    assert set(package.outputs) == set(AXES)
    assert package.default_variant in package.variants
    assert set(package.variants) <= {"fp32", "int8"}
    for variant_file in package.variants.values():
        assert (PACKAGE / variant_file).stat().st_size <= 20_000_000
    provenance = package.raw["provenance"]
    assert {"teacher", "training_data", "command", "created"} <= set(provenance)
    fidelity = package.raw["fidelity"]
    for key in ("iaa_srcc", "iqa_srcc", "ista_srcc", "iqa_ladder_trained", "iqa_ladder_heldout", "ista_ladder"):
        assert isinstance(fidelity[key], float)
    card = (PACKAGE / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "not a UniPercept distillation" in card
    assert "unipercept:" in card


def test_scores_in_range_and_image_dependent(scorer):
    results = [scorer.score(photo) for photo in _photos()]
    table = np.array([[getattr(r, axis) for axis in AXES] for r in results])
    assert np.all((table >= 0) & (table <= 100))
    assert np.all(table.std(axis=0) > 0.1), table  # every axis varies across images


def test_blur_lowers_quality(scorer):
    for photo in _photos()[:2]:
        sharp = scorer.score(photo).iqa
        blurred = scorer.score(photo.filter(ImageFilter.GaussianBlur(4))).iqa
        assert blurred < sharp - 5, (sharp, blurred)


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_every_variant_scores(package, variant):
    if variant not in package.variants:
        pytest.skip(f"package has no {variant} variant")
    from perceptlite import Scorer

    result = Scorer(package, variant=variant, threads=1).score(_photos()[0])
    assert result.error is None and 0 <= result.iqa <= 100
