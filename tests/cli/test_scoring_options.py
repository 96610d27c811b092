"""One way to run any command that scores (issue 23, class 11): score, filter, report and eval take
the same scoring options, declared once, and pass them on to the Scorer."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
from _runtime_fixtures import make_package
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
SCORING_COMMANDS = ["score", "filter", "report", "eval"]
SCORING_OPTIONS = ["--model", "--variant", "--device", "--threads", "--jobs", "--batch-size", "--cache", "--quiet"]


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "perceptlite", *map(str, args)], env=ENV, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def option_help(command: str) -> dict[str, tuple[str, ...]]:
    """{long option: (its names, help text, default)} of a command, as `perceptlite COMMAND --help` shows them."""
    from perceptlite.cli import main

    params = main.commands[command].params
    return {
        next(name for name in param.opts if name.startswith("--")): (tuple(param.opts), param.help, str(param.default))
        for param in params
        if isinstance(param, click.Option)
    }


@pytest.fixture(scope="module")
def two_variants(tmp_path_factory) -> Path:
    return make_package(tmp_path_factory.mktemp("models") / "two", size=(32, 32), int8_variant=True)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(11)
    for index in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    return folder


def test_every_scoring_command_has_the_same_scoring_options():
    helps = {command: option_help(command) for command in SCORING_COMMANDS}
    for option in SCORING_OPTIONS:
        texts = {command: helps[command].get(option) for command in SCORING_COMMANDS}
        assert None not in texts.values(), (option, texts)
        assert len(set(texts.values())) == 1, (option, texts)  # one declaration, one help text


@pytest.mark.parametrize("command", ["filter", "report"])
def test_filter_and_report_pass_the_variant_and_cache_on(two_variants, photos, tmp_path, command):
    cache = tmp_path / "scores.db"
    extra = ["--where", "iaa >= 0"] if command == "filter" else ["-o", tmp_path / "page.html"]
    run = cli(command, photos, "-m", two_variants, "--variant", "int8", "--threads", "1", "--jobs", "1", "--cache", cache, *extra)
    assert run.returncode == 0, run.stderr
    again = cli("score", photos, "-m", two_variants, "--variant", "int8", "--cache", cache, "--jsonl")
    assert "3 reused, 0 newly scored" in again.stderr  # the cache knows these scores as int8's
    other = cli("score", photos, "-m", two_variants, "--variant", "fp32", "--cache", cache, "--jsonl")
    assert "0 reused, 3 newly scored" in other.stderr


@pytest.mark.parametrize("command", SCORING_COMMANDS)
def test_a_variant_the_package_lacks_is_one_line_in_every_command(two_variants, photos, tmp_path, command):
    extra = {
        "score": [photos],
        "filter": [photos, "--where", "iaa >= 0"],
        "report": [photos, "-o", tmp_path / "page.html"],
        "eval": [tmp_path / "vr.json"],
    }[command]
    if command == "eval":
        (tmp_path / "vr.json").write_text(json.dumps([{"image": f"{n}.png", "gt_score": n} for n in range(3)]))
        extra += ["--images", photos]
    run = cli(command, "-m", two_variants, "--variant", "nope", *extra)
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "nope" in lines[0] and "Traceback" not in run.stderr, run.stderr


def test_report_quiet_says_nothing(two_variants, photos, tmp_path):
    run = cli("report", photos, "-m", two_variants, "-o", tmp_path / "page.html", "--quiet")
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert (tmp_path / "page.html").stat().st_size > 0


def test_the_backends_share_devices_without_importing_each_other():
    """The onnx and gguf backends take DEVICES from their own module, not from base (which opens them):
    no import circle base <-> onnx, gguf."""
    for backend in ("onnx", "gguf"):
        source = (REPO / "perceptlite" / "backends" / f"{backend}.py").read_text()
        assert "from .base import" not in source and "from .devices import DEVICES" in source


def test_cache_is_declared_once():
    sources = "".join(path.read_text() for path in (REPO / "perceptlite" / "cli").glob("*.py"))
    assert len(re.findall(r"option\(\s*\"--cache\"", sources)) == 1
