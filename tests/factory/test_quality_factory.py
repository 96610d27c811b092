"""The human-calibrated package factory (export/quality*.py) end to end on a few real photos."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from export.calibration import PiecewiseLinear, apply_knots, quantile_knots
from export.onnx_export import export_onnx
from export.quality import dev_photos
from export.quality_model import student_from_onnx
from export.size_ladders import LADDER_KINDS, ladder_image
from export.student import build_student
from perceptlite import Scorer
from perceptlite.package.manifest import load_package


@pytest.fixture(scope="module")
def student_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    student = build_student(pretrained=True)
    path = tmp_path_factory.mktemp("student") / "student.pt"
    torch.save(student.state_dict(), path)
    return path


def test_student_is_rebuilt_exactly_from_its_onnx_export(tmp_path):
    torch.manual_seed(1)
    student = build_student(pretrained=True).eval()
    path = export_onnx(student, tmp_path / "student.onnx", 224)
    rebuilt = student_from_onnx(path)
    pixels = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(student(pixels), rebuilt(pixels), atol=1e-3)


def test_iaa_calibration_is_monotone_and_matches_quantiles():
    rng = np.random.default_rng(0)
    raw = rng.normal(37, 3, 2000)
    target = rng.normal(48, 10, 5000)
    knots = quantile_knots(raw, target)
    mapped = apply_knots(raw, knots)
    assert np.all(np.diff(mapped[np.argsort(raw)]) >= -1e-4)  # ranking kept
    assert np.percentile(mapped, 75) - np.percentile(mapped, 25) == pytest.approx(np.percentile(target, 75) - np.percentile(target, 25), rel=0.1)
    curve = PiecewiseLinear(knots)
    assert float(curve(torch.tensor([1000.0]))) == 100.0 and float(curve(torch.tensor([-1000.0]))) == 0.0


@pytest.mark.parametrize("kind", LADDER_KINDS)
def test_ladders_are_deterministic_and_keep_the_size(corpus_dir, kind):
    photo = Image.open(sorted((corpus_dir / "bsds500" / "val").glob("*.jpg"))[0]).convert("RGB")
    first, again = ladder_image(photo, kind, 3, "seed"), ladder_image(photo, kind, 3, "seed")
    assert first.size == photo.size
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(photo))


def test_factory_end_to_end_on_a_few_photos(tmp_path, student_checkpoint, corpus_dir):
    from export.quality_export import export_package_files
    from export.quality_features import cache_dev_features, cache_ladder_features, calibrate_iaa, feature_session
    from export.quality_fit import fit_iqa_head
    from export.quality_package import write_quality_package

    work = tmp_path / "work"
    photos = dev_photos()[:15]
    session = feature_session(student_checkpoint, work)
    cache_dev_features(session, photos, work / "dev_features.npz")
    big = next(p for p in sorted((corpus_dir / "imagenet-sample").glob("*.JPEG")) if min(Image.open(p).size) >= 300)
    cache_ladder_features(session, [("dev/one", photos[0][0], None), ("big@600", big, 600)], work / "ladders")
    assert len(list((work / "ladders").glob("*.npz"))) == 2
    fit = fit_iqa_head(work)
    assert fit["ladder_steps"] == 2 * 5 * 5 and fit["train_images"] + fit["heldout_images"] == 15
    ordinary = tmp_path / "ordinary"
    ordinary.mkdir()
    for path in sorted((corpus_dir / "bsds500" / "val").glob("*.jpg"))[:8]:
        os.symlink(path, ordinary / path.name)
    knots = calibrate_iaa(session, [ordinary], work / "iaa_knots.json")
    assert knots["photos"] == 8
    summary = export_package_files(work, student_checkpoint, [p for p, _, _ in photos[:4]])
    assert summary["onnx_vs_torch_max_abs"] < 0.05
    package = write_quality_package(work, tmp_path / "package", "0.0.1", "test", fidelity=None)
    manifest = json.loads((package / "perceptlite.json").read_text())
    assert manifest["input"]["crops"]["cells"] and load_package(package).input.crops.count == 5
    for variant in ("fp32", "int8"):
        result = Scorer(package, device="cpu", variant=variant).score(str(photos[1][0]))
        assert result.ok and all(0 <= v <= 100 for v in (result.iaa, result.iqa, result.ista))
    # Resumable: a second run of the feature steps keeps what is on disk.
    stamp = (work / "dev_features.npz").stat().st_mtime_ns
    cache_dev_features(session, photos, work / "dev_features.npz")
    assert (work / "dev_features.npz").stat().st_mtime_ns == stamp
