"""No command's output destroys an input or an earlier result (issue 23, class 1; class 4's
Parquet temporary file): every output is checked against every input and the other outputs
before any work, and published only when the command succeeds."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _runtime_fixtures import tiny_package  # noqa: F401  (pytest fixture)
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "perceptlite", *map(str, args)], env=ENV, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def refused(run: subprocess.CompletedProcess, *words: str) -> str:
    """The run ended with exit 2 and one line on stderr naming every word; nothing on stdout."""
    assert run.returncode == 2, (run.returncode, run.stderr)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert all(word in lines[0] for word in words), lines[0]
    assert run.stdout == ""
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture()
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for name in ("a.jpg", "b.png"):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / name)
    return folder


@pytest.mark.parametrize("given", ["the file", "its folder"])
def test_report_never_overwrites_an_input_image(tiny_package, photos, given):
    before = snapshot(photos)
    inputs = [photos / "a.jpg"] if given == "the file" else [photos]
    refused(cli("report", "-m", tiny_package, *inputs, "-o", photos / "a.jpg"), "a.jpg", "input")
    assert snapshot(photos) == before


def test_report_never_overwrites_its_score_file(tiny_package, photos, tmp_path):
    scores = tmp_path / "scores.jsonl"
    assert cli("score", "-m", tiny_package, photos, "-o", scores).returncode == 0
    before = scores.read_bytes()
    refused(cli("report", "--from-scores", scores, "-o", scores), "--from-scores", "input")
    link = tmp_path / "page.html"
    link.symlink_to(scores)  # the same file under another name
    refused(cli("report", "--from-scores", scores, "-o", link), "--from-scores")
    assert scores.read_bytes() == before


@pytest.mark.parametrize("command", ["score", "report"])
def test_an_output_naming_the_cache_keeps_the_cache(tiny_package, photos, tmp_path, command):
    cache = tmp_path / "scores.db"
    assert cli("score", "-m", tiny_package, photos, "--cache", cache, "-o", tmp_path / "first.jsonl").returncode == 0
    before = cache.read_bytes()
    refused(cli(command, "-m", tiny_package, photos, "--cache", cache, "-o", cache), "--cache", "input")
    assert cache.read_bytes() == before


@pytest.mark.parametrize("suffix, option", [(".json", "-o"), (".jsonl", "-o"), (".parquet", "--parquet")])
def test_a_run_that_finds_nothing_keeps_the_earlier_result(tiny_package, photos, tmp_path, suffix, option):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    previous = tmp_path / f"prev{suffix}"
    assert cli("score", "-m", tiny_package, photos, "--jsonl", option, previous).returncode == 0
    before = previous.read_bytes()
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(cli("score", "-m", tiny_package, empty, "--jsonl", option, previous), "no image files found")
    assert previous.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == sorted(["photos", "empty", previous.name]), "a temporary file stayed"


@pytest.mark.parametrize("second", ["same name", "a link to it", "a hard link to it"])
def test_two_outputs_naming_one_file_are_refused(tiny_package, photos, tmp_path, second):
    pytest.importorskip("pyarrow")
    first = tmp_path / "out.parquet"
    first.write_bytes(b"earlier result")
    other = {"same name": first, "a link to it": tmp_path / "link.parquet", "a hard link to it": tmp_path / "hard.parquet"}[second]
    if second == "a link to it":
        other.symlink_to(first)
    elif second == "a hard link to it":
        os.link(first, other)
    refused(cli("score", "-m", tiny_package, photos, "-o", first, "--parquet", other), "--parquet", "-o")
    assert first.read_bytes() == b"earlier result"


def test_merge_never_overwrites_a_shard(tiny_package, photos, tmp_path):
    shards = [tmp_path / "0.jsonl", tmp_path / "1.jsonl"]
    for index, shard in enumerate(shards):
        assert cli("score", "-m", tiny_package, photos, "--shard", f"{index}/2", "-o", shard).returncode == 0
    before = [shard.read_bytes() for shard in shards]
    refused(cli("merge", *shards, "-o", shards[1]), "1.jsonl", "input")
    assert [shard.read_bytes() for shard in shards] == before


def test_an_interrupted_parquet_write_leaves_no_temporary_file(tiny_package, photos, tmp_path):
    """A Parquet file that cannot be finished (here: its folder is a full 256 KiB tmpfs) is dropped whole."""
    pytest.importorskip("pyarrow")
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        with open(mount / "filler", "wb") as handle, pytest.raises(OSError):
            handle.write(b"\0" * (128 * 1024))
        run = cli("score", "-m", tiny_package, photos, "-o", tmp_path / "out.jsonl", "--parquet", mount / "out.parquet")
        refused_line = [line for line in run.stderr.splitlines() if line.strip()]
        assert run.returncode == 2 and len(refused_line) == 1 and "Traceback" not in run.stderr, run.stderr
        assert os.listdir(mount) == ["filler"]
        assert not (tmp_path / "out.jsonl").exists(), "-o was published although the run failed"
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_the_runtime_has_one_atomic_write_helper():
    """Every file the runtime publishes goes through perceptlite/records/publish.py."""
    pattern = re.compile(r"\bos\.replace\(|\bos\.rename\(|\bmkstemp\(|NamedTemporaryFile\(")
    users = sorted(
        str(path.relative_to(REPO)) for path in (REPO / "perceptlite").rglob("*.py") if pattern.search(path.read_text(encoding="utf-8"))
    )
    # file_actions places filter's copies by link()/rename() relative to a folder descriptor, never over a name
    assert users == ["perceptlite/datasets/file_actions.py", "perceptlite/records/publish.py"]
