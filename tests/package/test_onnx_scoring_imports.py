"""Scoring with an ONNX package loads no training stack: torch and friends stay out of the process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "models" / "perceptlite-base"


def test_scoring_the_bundled_package_never_imports_torch(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for index in range(2):
        Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(tmp_path / f"img{index}.png")
    probe = (
        "import glob, sys, perceptlite\n"
        f"scorer = perceptlite.Scorer({str(PACKAGE)!r})\n"
        f"results = list(scorer.score_many(sorted(glob.glob({str(tmp_path / '*.png')!r}))))\n"
        "assert all(r.ok for r in results), results\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'optimum', 'h5py') if m in sys.modules)\n"
        "print('imported:', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported: []"
