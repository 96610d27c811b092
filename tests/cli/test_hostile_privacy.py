"""perceptlite runs offline (issue 23, class 9): a real run leaves nothing under the user's home,
in particular no onnxruntime telemetry database under ~/.cache/Microsoft."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _runtime_fixtures import tiny_package  # noqa: F401  (pytest fixture)
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def empty_home(tmp_path) -> dict[str, str]:
    """An environment whose HOME is an empty folder and that does not itself turn telemetry off."""
    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME")}
    return dict(env, HOME=str(home), PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def _photos(folder: Path) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(9)
    for index in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    return folder


def _left_behind(env: dict[str, str]) -> list[str]:
    home = Path(env["HOME"])
    return sorted(str(path.relative_to(home)) for path in home.rglob("*"))


def test_a_score_run_leaves_no_telemetry_under_home(tiny_package, tmp_path, empty_home):
    photos = _photos(tmp_path / "photos")
    for model in (tiny_package, None):  # a package folder, and the bundled default
        args = ["score", photos, "--jsonl", *(["-m", model] if model else [])]
        run = subprocess.run([sys.executable, "-m", "perceptlite", *map(str, args)], env=empty_home, capture_output=True, timeout=300)
        assert run.returncode == 0, run.stderr
    assert not (Path(empty_home["HOME"]) / ".cache" / "Microsoft").exists()
    assert _left_behind(empty_home) == []


def test_the_python_api_leaves_no_telemetry_under_home(tiny_package, tmp_path, empty_home):
    photos = _photos(tmp_path / "photos")
    code = f"from perceptlite import Scorer; print(Scorer({str(tiny_package)!r}).score({str(photos / '0.png')!r}).iaa)"
    run = subprocess.run([sys.executable, "-c", code], env=empty_home, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and float(run.stdout) >= 0, run.stderr
    assert _left_behind(empty_home) == []
