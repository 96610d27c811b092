"""The runtime's habits, checked by the test command: ruff (lint and format) and mypy, as configured in pyproject.toml.

The factory (export/) and its tests are not checked here yet (see [tool.ruff] extend-exclude).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKED = ["perceptlite", "tests", "export"]


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
    if importlib.util.find_spec(tool) is None:
        pytest.skip(f"{tool} is not installed (it comes with the test extra: pip install -e '.[test]')")
    return subprocess.run([sys.executable, "-m", tool, *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff_lint():
    run = _run("ruff", "check", *CHECKED)
    assert run.returncode == 0, run.stdout + run.stderr


def test_ruff_format():
    run = _run("ruff", "format", "--check", *CHECKED)
    assert run.returncode == 0, f"run `ruff format {' '.join(CHECKED)}`:\n{run.stdout}{run.stderr}"


def test_mypy():
    run = _run("mypy")  # files and settings: [tool.mypy] in pyproject.toml
    assert run.returncode == 0, run.stdout + run.stderr
