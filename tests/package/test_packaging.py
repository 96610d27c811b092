"""The built wheel carries the bundled model, and an installed copy scores with it out of the box."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (built,) = out.glob("perceptlite-*.whl")
    return built


def test_wheel_ships_every_bundled_package(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in (REPO / "models").iterdir():
        manifest = json.loads((package / "perceptlite.json").read_text())
        for file_name in [*manifest["files"], "perceptlite.json"]:
            assert f"perceptlite/models/{package.name}/{file_name}" in names
    assert not any(name.startswith(("export/", "tests/")) for name in names), "the factory stays out of the wheel"


def test_installed_wheel_scores_with_the_bundled_model(wheel: Path, tmp_path: Path, corpus_dir: Path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    photo = next(iter(sorted((corpus_dir / "bsds500" / "val").glob("*.jpg"))))
    script = (
        "import json, sys, perceptlite\n"
        "from perceptlite import Scorer\n"
        "assert perceptlite.__file__.startswith(sys.argv[1]), perceptlite.__file__\n"
        "result = Scorer().score(sys.argv[2])\n"
        "print(json.dumps(result.as_dict()))\n"
    )
    # -I: isolated mode, so neither the repository nor an editable install is on the path
    env_path = [str(site)]
    run = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path[:0] = {env_path!r}; exec({script!r})", str(site), str(photo)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    record = json.loads(run.stdout)
    assert record["error"] is None
    assert all(0 <= record[axis] <= 100 for axis in ("iaa", "iqa", "ista"))
