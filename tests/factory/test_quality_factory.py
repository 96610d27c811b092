"""The human-calibrated package factory (export/wholeview/) end to end on a few real photos."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from export.common.network import build_student
from export.common.size_ladders import LADDER_KINDS, ladder_image
from export.distill.onnx_export import export_onnx
from export.wholeview.calibration import PiecewiseLinear, apply_knots, quantile_knots
from export.wholeview.config import dev_photos
from export.wholeview.model import CROP_CELLS, IQA_FEATURES, student_from_onnx
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
    assert np.percentile(mapped, 75) - np.percentile(mapped, 25) == pytest.approx(
        np.percentile(target, 75) - np.percentile(target, 25), rel=0.1
    )
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
    from export.distill.label import read_records
    from export.distill.label_command import main as label_main
    from export.distill.train import record_image
    from export.wholeview.aesthetics import blended_record_iaa, calibrate_iaa
    from export.wholeview.calibration import apply_knots
    from export.wholeview.export import export_package_files
    from export.wholeview.features import cache_dev_features, cache_ladder_features, feature_session
    from export.wholeview.fit import fit_iqa_head
    from export.wholeview.package import write_quality_package

    work = tmp_path / "work"
    photos = dev_photos()[:15]
    session = feature_session(student_checkpoint, work)
    cache_dev_features(session, photos, work / "dev_features.npz")
    assert np.load(work / "dev_features.npz")["features"].shape == (15, len(CROP_CELLS), IQA_FEATURES)  # per crop
    big = next(p for p in sorted((corpus_dir / "imagenet-sample").glob("*.JPEG")) if min(Image.open(p).size) >= 300)
    cache_ladder_features(session, [("dev/one", photos[0][0], None), ("big@600", big, 600)], work / "ladders")
    assert len(list((work / "ladders").glob("*.npz"))) == 2
    fit = fit_iqa_head(work)
    assert fit["ladder_steps"] == 2 * len(LADDER_KINDS) * 5 and fit["train_images"] + fit["heldout_images"] == 15
    ordinary = tmp_path / "ordinary"
    ordinary.mkdir()
    for path in sorted((corpus_dir / "bsds500" / "val").glob("*.jpg"))[:8]:
        os.symlink(path, ordinary / path.name)
    labels = tmp_path / "labels.jsonl"  # as export.distill labels the corpus, with NIMA alone
    assert (
        label_main(
            ["--teacher", "nima", "--images", str(ordinary), "--out", str(labels), "--distortions-per-image", "1", "--views-per-image", "1"]
        )
        == 0
    )
    knots = calibrate_iaa(session, [labels], work / "iaa_knots.json")
    blend = knots["blend"]
    assert knots["photos"] == 8 and blend["train_photos"] + blend["heldout_photos"] == 8
    assert (
        blend["train_records"] == 3 * blend["train_photos"] and blend["heldout_records"] == 2 * blend["heldout_photos"]
    )  # held-out crops left out
    summary = export_package_files(work, student_checkpoint, [p for p, _, _ in photos[:4]])
    assert summary["onnx_vs_torch_max_abs"] < 0.05
    package = write_quality_package(work, tmp_path / "package", "0.0.1", "test", fidelity=None)
    manifest = json.loads((package / "perceptlite.json").read_text())
    assert manifest["input"]["crops"]["cells"] and load_package(package).input.crops.count == len(CROP_CELLS)
    for variant in ("fp32", "int8"):
        result = Scorer(package, device="cpu", variant=variant).score(str(photos[1][0]))
        assert result.ok and all(0 <= v <= 100 for v in (result.iaa, result.iqa, result.ista))
    # The graph's iaa is the blend the factory fitted, through the calibration it wrote.
    raw, clean = blended_record_iaa(work)
    clean_images = [record_image(r) for r in read_records([labels]) if not r.get("distortion") and not r.get("view")]
    scored_iaa = [r.iaa for r in Scorer(package, device="cpu", variant="fp32").score_many(clean_images)]
    np.testing.assert_allclose(scored_iaa, apply_knots(raw[clean], knots["knots"]), atol=0.05)
    # The size-drift measurement scores one wallpaper at 500 px and at its own size, and the card shows it.
    from export.wholeview.acceptance import size_drift
    from export.wholeview.card import model_card, size_drift_shortfall

    drift = size_drift(Scorer(package, device="cpu"), ["Grey"], sizes=(500,))
    assert set(drift["per_photo"]["Grey"]) == {"500", "native"} and drift["native_long_side_px"][0] >= 1500
    assert all(0 <= v <= 100 for v in drift["mean_clean_iqa"].values())
    assert "| Grey |" in model_card({**manifest, "fidelity": {"size_drift": drift}})
    apart = {"size_drift": {"mean_clean_iqa": {"500": 70.0, "native": 50.0}}}
    assert "20 points lower" in " ".join(size_drift_shortfall(apart))
    assert size_drift_shortfall({"size_drift": {"mean_clean_iqa": {"500": 70.0, "native": 68.0}}}) == []
    # `package --reuse-measurement` takes earlier numbers only for the very ONNX files they measured.
    from click.testing import CliRunner

    from export.wholeview.commands import main, model_digests
    from export.wholeview.config import WORK_FILES

    earlier = {"human": {"heldout": {"srcc": 0.5, "plcc": 0.5, "mae": 20.0, "images": 4}}}
    (work / WORK_FILES["acceptance"]).write_text(json.dumps({"files": model_digests(work), "fidelity": earlier}))
    args = ["package", "--work", str(work), "--out", str(tmp_path / "reused"), "--reuse-measurement"]
    ran = CliRunner().invoke(main, args)
    assert ran.exit_code == 0, ran.output
    assert json.loads((tmp_path / "reused" / "perceptlite.json").read_text())["fidelity"] == earlier
    (work / WORK_FILES["acceptance"]).write_text(json.dumps({"files": {"model.onnx": "0" * 64}, "fidelity": earlier}))
    ran = CliRunner().invoke(main, args)
    assert ran.exit_code == 1 and "measured other ONNX files" in ran.output
    # Resumable: a second run of the feature steps keeps what is on disk.
    stamp = (work / "dev_features.npz").stat().st_mtime_ns
    cache_dev_features(session, photos, work / "dev_features.npz")
    assert (work / "dev_features.npz").stat().st_mtime_ns == stamp


def test_unipercept_teacher_labels_photos_once_and_joins_the_fit(tmp_path, student_checkpoint, corpus_dir, unipercept_sensitive_checkpoint):
    """`teacher` (the small checkpoint: its scores mean nothing, only the plumbing is tested) labels unrated
    photos and the dev training photos, resumes without recomputing, and `fit` learns from the labels."""
    from export.common.splits import is_heldout
    from export.distill.label import read_records
    from export.wholeview.features import cache_dev_features, feature_session
    from export.wholeview.fit import fit_iqa_head, load_iqa_head
    from export.wholeview.teacher import TEACHER_DEV_LABELS, TEACHER_FEATURES, TEACHER_LABELS, load_iqa_teacher, teacher_step, teacher_term

    work = tmp_path / "work"
    photos = dev_photos()[:24]
    session = feature_session(student_checkpoint, work)
    cache_dev_features(session, photos, work / "dev_features.npz")
    unrated = tmp_path / "unrated"
    unrated.mkdir()
    for path in sorted((corpus_dir / "bsds500" / "val").glob("*.jpg"))[:12]:
        os.symlink(path, unrated / path.name)
    teacher = load_iqa_teacher(f"unipercept:{unipercept_sensitive_checkpoint}")

    first = teacher_step(teacher, session, work, [unrated], 6, photos)
    labels = read_records(work / TEACHER_LABELS)
    assert len(labels) == 6 and first["unrated"]["written"] == 6
    assert all(not is_heldout(r["source"]) and 0 <= r["iqa"] <= 100 and set(r["teachers"]) == {"unipercept"} for r in labels)
    dev_labels = read_records(work / TEACHER_DEV_LABELS)
    training_dev = [p.name for p, _, held in photos if not held]
    assert sorted(r["source"] for r in dev_labels) == sorted(training_dev) and len(training_dev) >= 10
    assert first["features"] == {"photos": 6, "computed": 6}
    assert np.load(work / TEACHER_FEATURES)["features"].shape[:2] == (6, len(CROP_CELLS))

    # Resumed: nothing is rated or cut again, the files stay as they were.
    written = {name: (work / name).read_bytes() for name in (TEACHER_LABELS, TEACHER_DEV_LABELS, TEACHER_FEATURES)}
    again = teacher_step(teacher, session, work, [unrated], 6, photos)
    assert again["unrated"]["written"] == 0 and again["unrated"]["done_before"] == 6 and again["dev"]["written"] == 0
    assert again["features"]["computed"] == 0
    assert all((work / name).read_bytes() == content for name, content in written.items())

    # The fit uses them: weight 0 leaves the teacher term out, 0.5 puts it in and moves the head
    # (one weight decay: the cross-validated choice among several is tested above).
    off = fit_iqa_head(work, teacher_weight=0.0, alphas=(300.0,))
    head_off = load_iqa_head(work)
    on = fit_iqa_head(work, teacher_weight=0.5, alphas=(300.0,))
    head_on = load_iqa_head(work)
    assert off["teacher"]["term"] == "off" and "cv_5fold_without_teacher" not in off["teacher"]
    recorded = json.loads((work / "fit.json").read_text())["teacher"]
    assert recorded == on["teacher"] and recorded["weight"] == 0.5 and recorded["photos"] == 6
    assert recorded["term"].startswith("teacher_weight") and "cv_5fold_without_teacher" in recorded
    assert recorded["mapping"]["kind"].startswith("isotonic") and recorded["mapping"]["photos_rated_by_both"] == len(training_dev)
    # The manifest and card say the head learnt from a teacher too.
    from export.wholeview.card import teacher_lines
    from export.wholeview.package import build_manifest

    trained_on = build_manifest(work, "0.0.1", "test", None)["provenance"]["iqa"]["trained_on"]
    assert "teacher's iqa of 6 unrated photos at weight 0.5" in trained_on
    assert "6 unrated photos" in " ".join(teacher_lines(recorded)) and teacher_lines(off["teacher"]) == []
    features = torch.from_numpy(np.load(work / TEACHER_FEATURES)["features"].mean(axis=1)).float()
    with torch.no_grad():
        assert not torch.allclose(head_off(features), head_on(features), atol=1e-3)
    # Without photos rated by both, the teacher's scale is used as is.
    (work / TEACHER_DEV_LABELS).unlink()
    dev = np.load(work / "dev_features.npz")
    _, targets, summary = teacher_term(work, dev["names"], dev["mos"], dev["heldout"])
    assert summary["mapping"]["kind"].startswith("identity") and np.allclose(targets, [r["iqa"] for r in labels])


@pytest.mark.parametrize("teacher", ["iqa-synthetic", "nima", "unipercept:/nonexistent/checkpoint"])
def test_quality_teacher_refuses_a_teacher_that_cannot_rate_photos_alone(tmp_path, teacher):
    student = tmp_path / "student.pt"
    student.write_bytes(b"not read: the teacher is checked first")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "export.wholeview",
            "teacher",
            "--student",
            str(student),
            "--work",
            str(tmp_path / "work"),
            "--teacher",
            teacher,
        ],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert ("does not rate iqa" in run.stderr) if not teacher.startswith("unipercept") else ("config.json" in run.stderr)
    assert not (tmp_path / "work").exists()
