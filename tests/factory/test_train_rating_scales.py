"""Rating files keep their own scales: the recipe's configs declare them right, and a rating outside the
declared range is refused with one line (never clipped)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from export.train import data  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "export" / "train" / "configs" / "unipercept-8b-8gpu.sh"
# The official label files' own scales (UniPercept's repository): the maximum each config line must declare.
OWN_SCALE_MAX = {"koniq": 100.0, "artimuse": 10.0, "ista": 100.0}


def _rating_file(tmp_path: Path, scores: list[float]) -> Path:
    path = tmp_path / "ratings.json"
    path.write_text(json.dumps([{"image": f"{i}.jpg", "gt_score": s} for i, s in enumerate(scores)]), encoding="utf-8")
    return path


def test_config_maps_every_rating_file_from_its_own_scale() -> None:
    lines = re.findall(r'json="\$DATA/(\w+?)_train\.json".*?axis=(\w+),min=([\d.]+),max=([\d.]+)', CONFIG.read_text())
    assert len(lines) == 6  # three rating files in each stage
    for name, _axis, low, high in lines:
        assert (float(low), float(high)) == (0.0, OWN_SCALE_MAX[name]), name


def test_ratings_inside_the_declared_range_map_linearly(tmp_path: Path) -> None:
    spec = data.DatasetSpec.parse(f"json={_rating_file(tmp_path, [1.0, 9.78, 5.0])},images={tmp_path},axis=iaa,min=0,max=10")
    assert [round(s.target, 6) for s in data.load_samples(spec)] == [10.0, 97.8, 50.0]


def test_a_rating_outside_the_declared_range_is_refused(tmp_path: Path) -> None:
    path = _rating_file(tmp_path, [4.2, 9.7, 1.5])
    spec = data.DatasetSpec.parse(f"json={path},images={tmp_path},axis=iqa,min=1,max=5")
    with pytest.raises(ValueError) as caught:
        data.load_samples(spec)
    message = str(caught.value)
    assert str(path) in message and "1.5..9.7" in message and "min=1..max=5" in message and "\n" not in message


def test_the_training_command_stops_with_one_line(tmp_path: Path, unipercept_tiny_checkpoint: Path) -> None:
    path = _rating_file(tmp_path, [12.0, 150.0])
    args = ["--checkpoint", str(unipercept_tiny_checkpoint), "--output", str(tmp_path / "run"), "--device", "cpu",
            "--dataset", f"json={path},images={tmp_path},axis=iaa,min=0,max=100", "--steps", "1"]  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "export.train.train", *args], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert str(path) in line and "12..150" in line
    assert not (tmp_path / "run" / "checkpoints").exists()
