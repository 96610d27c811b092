"""The SQLite score cache: grown folders, kill-and-resume, concurrent runs, corrupt files."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _dataset_fixtures import REPO, build_tiny_package, make_images, run_cli

from perceptlite.datasets.cache import CacheError, ScoreCache
from perceptlite.package.manifest import load_package
from perceptlite.records import ScoreResult

STATS = re.compile(r"cache .*: (\d+) reused, (\d+) newly scored")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return build_tiny_package(tmp_path_factory.mktemp("model") / "tiny")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def cache_stats(stderr: str) -> tuple[int, int]:
    match = STATS.search(stderr)
    assert match, stderr
    return int(match.group(1)), int(match.group(2))


def cached_rows(cache: Path) -> int:
    if not cache.exists():
        return 0
    db = sqlite3.connect(f"file:{cache}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute("SELECT COUNT(*) FROM scores").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not created yet
        return 0
    finally:
        db.close()


def test_grown_folder_scores_only_new_and_changed_files(tmp_path, model):
    images = tmp_path / "images"
    first = make_images(images, 20)
    cache = tmp_path / "scores.db"
    run = run_cli("score", images, "-m", model, "--cache", cache, "--jsonl", "-o", tmp_path / "one.jsonl")
    assert cache_stats(run.stderr) == (0, 20)

    make_images(images, 7, start=20)  # the folder grows
    changed = first[3]
    make_images(tmp_path / "other", 1, start=99, subfolders=0)[0].replace(changed)  # new content, new mtime
    run = run_cli("score", images, "-m", model, "--cache", cache, "--jsonl", "-o", tmp_path / "two.jsonl")
    assert cache_stats(run.stderr) == (19, 8)

    fresh = run_cli("score", images, "-m", model, "--jsonl")
    assert read_jsonl(tmp_path / "two.jsonl") == [json.loads(line) for line in fresh.stdout.splitlines()]
    run = run_cli("score", images, "-m", model, "--cache", cache, "--jsonl", "-o", tmp_path / "three.jsonl")
    assert cache_stats(run.stderr) == (27, 0)
    assert (tmp_path / "three.jsonl").read_bytes() == (tmp_path / "two.jsonl").read_bytes()


def test_another_model_does_not_reuse_the_scores(tmp_path, model):
    images = tmp_path / "images"
    make_images(images, 6)
    cache = tmp_path / "scores.db"
    run_cli("score", images, "-m", model, "--cache", cache, "--jsonl")
    other = build_tiny_package(tmp_path / "other-model", name="tiny-other", slow_layers=1)
    run = run_cli("score", images, "-m", other, "--cache", cache, "--jsonl")
    assert cache_stats(run.stderr) == (0, 6)


def _slow_score_command(images: Path, model: Path, cache: Path, *extra: object) -> list[str]:
    """`perceptlite score` of a folder with the slow model through a cache, one batch of 4 at a time."""
    args = ["score", images, "-m", model, "--cache", cache, "--jsonl", *extra, "--batch-size", "4", "--threads", "1", "-j", "1"]
    return [sys.executable, "-m", "perceptlite", *map(str, args)]


def test_killed_run_resumes_and_scores_each_file_once(tmp_path):
    slow = build_tiny_package(tmp_path / "slow", name="tiny-slow", slow_layers=800)
    images = tmp_path / "images"
    total = 240
    make_images(images, total)
    cache = tmp_path / "scores.db"
    output = tmp_path / "scores.jsonl"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    command = _slow_score_command(images, slow, cache, "-o", output)
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while cached_rows(cache) < 8 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    saved = cached_rows(cache)
    assert 8 <= saved < total, "the run was not killed half-way; make the slow model slower"
    assert not output.exists()  # -o is only put in place when a run finishes

    resumed = run_cli("score", images, "-m", slow, "--cache", cache, "--jsonl", "-o", output, "--batch-size", "4", "--threads", "1")
    reused, scored = cache_stats(resumed.stderr)
    assert (reused, scored) == (saved, total - saved)  # nothing the killed run committed is scored again
    records = read_jsonl(output)
    paths = [record["path"] for record in records]
    assert len(paths) == total and len(set(paths)) == total
    assert all(record["error"] is None for record in records)
    assert cached_rows(cache) == total

    # the slow model computes the same scores as the plain one (its extra work is multiplied by 0)
    plain = build_tiny_package(tmp_path / "plain")
    reference = run_cli("score", images, "-m", plain, "--jsonl")
    assert [json.loads(line) for line in reference.stdout.splitlines()] == records


def test_ctrl_c_commits_what_was_scored(tmp_path):
    # ~8 ms a batch here: the first commit (64 images) comes well before the last of 200 images
    slow = build_tiny_package(tmp_path / "slow", name="tiny-slow", slow_layers=800)
    images = tmp_path / "images"
    make_images(images, 200)
    cache = tmp_path / "scores.db"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    command = _slow_score_command(images, slow, cache)
    # A shell's background job starts with SIGINT ignored, and children inherit that: give the run
    # Python's default Ctrl-C handling whoever started the test suite.
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 90
    while cached_rows(cache) == 0 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode not in (0, None) and "Traceback" not in stderr, stderr
    reused, stored = cache_stats(stderr)
    assert reused == 0 and stored == cached_rows(cache) < 200  # everything scored before Ctrl-C was committed
    assert stored >= len(stdout.splitlines())


def test_concurrent_runs_share_one_cache(tmp_path):
    model = build_tiny_package(tmp_path / "medium", name="tiny-medium", slow_layers=6)
    images = tmp_path / "images"
    make_images(images, 90)  # part0, part1, part2
    cache = tmp_path / "scores.db"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    base = [
        sys.executable,
        "-m",
        "perceptlite",
        "score",
        "-m",
        str(model),
        "--cache",
        str(cache),
        "--jsonl",
        "--batch-size",
        "2",
        "--threads",
        "1",
    ]
    runs = [
        subprocess.Popen(
            base + [str(images / "part0"), str(images / "part1")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ),
        subprocess.Popen(
            base + [str(images / "part2"), str(images / "part1")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ),
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    for run, (stdout, stderr) in zip(runs, outputs):
        assert run.returncode == 0, stderr
        assert len(stdout.splitlines()) == 60
    with sqlite3.connect(cache) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*) FROM scores").fetchone()[0] == 90
    again = run_cli("score", images, "-m", model, "--cache", cache, "--jsonl")
    assert cache_stats(again.stderr) == (90, 0)


@pytest.mark.parametrize("content", [b"this is not a database\n" * 100, b"SQLite format 3\x00" + b"\x07" * 4000])
def test_corrupt_cache_is_reported_and_kept(tmp_path, model, content):
    images = tmp_path / "images"
    make_images(images, 3)
    cache = tmp_path / "scores.db"
    cache.write_bytes(content)
    run = run_cli("score", images, "-m", model, "--cache", cache, "--jsonl", check=False)
    assert run.returncode == 2
    assert run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and str(cache) in lines[0] and "Traceback" not in run.stderr, run.stderr
    assert cache.read_bytes() == content  # never silently discarded


def test_damaged_cache_pages_are_detected(tmp_path, model):
    images = tmp_path / "images"
    make_images(images, 200, size=8)
    cache = tmp_path / "scores.db"
    run_cli("score", images, "-m", model, "--cache", cache, "--jsonl")
    with sqlite3.connect(cache) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = cache.stat().st_size
    assert size >= 4 * 4096
    with open(cache, "r+b") as handle:  # scribble over a b-tree page in the middle
        handle.seek(2 * 4096)
        handle.write(b"\xa5" * 4096)
    damaged = cache.read_bytes()
    run = run_cli("score", images, "-m", model, "--cache", cache, "--jsonl", check=False)
    assert run.returncode == 2 and "corrupt" in run.stderr and str(cache) in run.stderr
    assert "Traceback" not in run.stderr
    assert cache.read_bytes() == damaged


def test_foreign_sqlite_database_is_refused(tmp_path, model):
    cache = tmp_path / "other.db"
    with sqlite3.connect(cache) as db:
        db.execute("CREATE TABLE people (name TEXT)")
    with pytest.raises(CacheError, match="not a perceptlite score cache"):
        ScoreCache(cache, "abc")
    with sqlite3.connect(cache) as db:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("people",)]


def test_content_hash_identity_survives_touch_and_copy(tmp_path, model):
    package = load_package(model)
    image = make_images(tmp_path, 1, subfolders=0)[0]
    result = ScoreResult(str(image), 10.0, 20.0, 30.0, 24, 24)
    with ScoreCache(tmp_path / "c.db", package.package_hash, content_hash=True) as cache:
        assert cache.lookup(str(image)) is None
        cache.store(result)
    os.utime(image, ns=(1_000_000_000, 1_000_000_000))
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(image.read_bytes())
    with ScoreCache(tmp_path / "c.db", package.package_hash, content_hash=True) as cache:
        assert cache.lookup(str(image)) == result
        assert cache.lookup(str(copy)).iaa == 10.0
    with ScoreCache(tmp_path / "c.db", package.package_hash) as cache:  # path + size + mtime: touched = changed
        assert cache.lookup(str(image)) is None
