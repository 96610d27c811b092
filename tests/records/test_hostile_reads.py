"""Everything read back is checked like a fresh score (issue 23, class 4): score files and cache rows
with wrong types or non-finite, overflowing or out-of-range values give a one-line error or are
scored again, never a traceback, ``inf`` or a score outside 0-100."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _runtime_fixtures import tiny_package  # noqa: F401  (pytest fixture)
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perceptlite", *map(str, args)], env=ENV, capture_output=True, text=True, timeout=120)


def one_line_error(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 2, (run.returncode, run.stderr)
    assert "Traceback" not in run.stderr, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    return lines[0]


@pytest.fixture()
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(23)
    for index in range(3):
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    return folder


# One bad field each, as JSON text: what a hand-edited or foreign score file may hold.
BAD_JSON_FIELDS = {
    "error-number": '"error": 123',
    "error-list": '"error": ["x"]',
    "width-overflow": '"width": 1e400',
    "width-huge-int": '"width": ' + "9" * 5000,
    "width-fraction": '"width": 12.5',
    "width-negative": '"width": -16',
    "width-bool": '"width": true',
    "height-text": '"height": "tall"',
    "iaa-overflow": '"iaa": 1e999',
    "iaa-above-100": '"iaa": 150',
    "iaa-below-0": '"iaa": -0.5',
    "iaa-text": '"iaa": "abc"',
    "iaa-bool": '"iaa": false',
    "iqa-object": '"iqa": {"a": 1}',
}


def _jsonl(folder: Path, tmp_path: Path, bad: str) -> Path:
    good = [
        f'{{"path": "{folder / name}", "iaa": 50.0, "iqa": 40.0, "ista": 30.0, "width": 16, "height": 12}}' for name in ("0.png", "1.png")
    ]
    bad_line = f'{{"path": "{folder / "2.png"}", "iaa": 10.0, {bad}}}'
    file = tmp_path / "scores.jsonl"
    file.write_text("\n".join([*good, bad_line]) + "\n")
    return file


@pytest.mark.parametrize("bad", list(BAD_JSON_FIELDS.values()), ids=list(BAD_JSON_FIELDS))
def test_every_reader_refuses_a_bad_field_in_one_line(photos, tmp_path, bad):
    scores = _jsonl(photos, tmp_path, bad)
    for command in (
        ["merge", scores, "-o", tmp_path / "all.jsonl"],
        ["filter", "--from-scores", scores, "--top", "1", "--by", "iaa"],
        ["report", "--from-scores", scores, "-o", tmp_path / "r.html"],
    ):
        line = one_line_error(cli(*command))
        assert str(scores) in line and ("record 3" in line or "line 3" in line), line
    assert not (tmp_path / "all.jsonl").exists() and not (tmp_path / "r.html").exists()


@pytest.mark.parametrize(
    "cells",
    ["1e400,,,16,12,", "abc,,,16,12,", "101,,,16,12,", "50,,,1e400,12,", "50,,,16,12.7,", "50,,,16,-3,"],
    ids=["iaa-overflow", "iaa-text", "iaa-above-100", "width-overflow", "height-fraction", "height-negative"],
)
def test_csv_values_are_checked_like_json(photos, tmp_path, cells):
    file = tmp_path / "scores.csv"
    file.write_text(f"path,iaa,iqa,ista,width,height,error\n{photos / '0.png'},50,40,30,16,12,\n{photos / '1.png'},{cells}\n")
    line = one_line_error(cli("filter", "--from-scores", file, "--where", "iaa >= 0"))
    assert str(file) in line and "record 3" in line, line


def test_parquet_values_are_checked_like_json(photos, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from perceptlite.records.parquet import schema

    rows = {"path": [str(photos / "0.png")], "iaa": [250.0], "iqa": [None], "ista": [None], "width": [16], "height": [12]}
    file = tmp_path / "scores.parquet"
    pq.write_table(pa.table({name: rows.get(name, [None]) for name in schema().names}, schema=schema()), file)
    line = one_line_error(cli("merge", file, "-o", tmp_path / "all.jsonl"))
    assert str(file) in line and "outside 0-100" in line, line


def test_nan_and_infinity_written_by_other_tools_still_count_as_missing(photos, tmp_path):
    file = tmp_path / "scores.jsonl"
    file.write_text(f'{{"path": "{photos / "0.png"}", "iaa": NaN, "iqa": Infinity, "ista": 3, "width": 16, "height": 12}}\n')
    merged = tmp_path / "all.jsonl"
    run = cli("merge", file, "-o", merged)
    assert run.returncode == 0, run.stderr
    record = json.loads(merged.read_text())
    assert record["iaa"] is None and record["iqa"] is None and record["ista"] == 3


@pytest.mark.parametrize(
    "tamper",
    ["iaa = 'abc'", "iaa = 9e999", "iqa = -9e999", "ista = 150", "width = 'wide'", "height = 1e300", "iaa = NULL, iqa = x'00ff'"],
    ids=["iaa-text", "iaa-inf", "iqa-minus-inf", "ista-above-100", "width-text", "height-huge", "blob"],
)
def test_a_tampered_cache_row_is_scored_again_never_returned(tiny_package, photos, tmp_path, tamper):
    cache = tmp_path / "c.db"
    fresh = cli("score", "-m", tiny_package, photos, "--jsonl")
    assert fresh.returncode == 0, fresh.stderr
    assert cli("score", "-m", tiny_package, photos, "--jsonl", "--cache", cache).returncode == 0
    with sqlite3.connect(cache) as db:
        db.execute(f"UPDATE scores SET {tamper} WHERE path = ?", (str(photos / "1.png"),))
    again = cli("score", "-m", tiny_package, photos, "--jsonl", "--cache", cache)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    assert again.stdout == fresh.stdout
    assert "2 reused, 1 newly scored" in again.stderr, again.stderr
    for record in map(json.loads, again.stdout.splitlines()):
        assert all(math.isfinite(record[axis]) and 0 <= record[axis] <= 100 for axis in ("iaa", "iqa", "ista"))
    healed = cli("score", "-m", tiny_package, photos, "--jsonl", "--cache", cache)
    assert "3 reused, 0 newly scored" in healed.stderr and healed.stdout == fresh.stdout, healed.stderr


def test_a_tampered_cache_row_is_not_used_by_the_api(tiny_package, photos, tmp_path):
    from perceptlite.scorer import Scorer

    cache = tmp_path / "c.db"
    with Scorer(tiny_package, cache=cache) as scorer:
        fresh = [r.iaa for r in scorer.score_many(sorted(map(str, photos.iterdir())))]
    with sqlite3.connect(cache) as db:
        db.execute("UPDATE scores SET iaa = 1e999")
    with Scorer(tiny_package, cache=cache) as scorer:
        again = [r.iaa for r in scorer.score_many(sorted(map(str, photos.iterdir())))]
        assert scorer.cache.hits == 0
    assert again == fresh
