"""A path is data whatever bytes it holds (issue 12, class 2): every output format round-trips
every name exactly, `filter` acts only on the file that was scored, and nothing written for a
terminal carries control characters."""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _runtime_fixtures import tiny_package  # noqa: F401  (pytest fixture)
from PIL import Image

from perceptlite.records.names import display_name, json_text

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")

HOSTILE_NAMES = [
    "cr\rreturn.jpg",
    "lf\nnewline.jpg",
    "esc\x1b[31mred.jpg",
    "tab\tand bell\x07.png",
    "-leading-dash.jpg",
    '"quoted".jpg',
    "c1\x9bcsi.jpg",
    "bidi\u202egpj.png",
    "del\x7f.jpg",
    'comma, and "quote".jpg',
    "ünïcødé 照片.jpg",
    os.fsdecode(b"latin1-\xe9t\xe9.jpg"),  # not valid UTF-8
    os.fsdecode(b"lone-\xff\xfe.png"),
]
# Control characters (C0 except newline, DEL, C1) that must never reach a terminal.
CONTROL = re.compile(rb"[\x00-\x09\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")


def cli(*args, check_code: int | None = 0) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-m", "perceptlite", *map(str, args)], env=ENV, capture_output=True, timeout=120)
    if check_code is not None:
        assert run.returncode == check_code, run.stderr.decode(errors="replace")
    return run


@pytest.fixture()
def folder(tmp_path) -> Path:
    root = tmp_path / "names"
    root.mkdir()
    rng = np.random.default_rng(5)
    for index, name in enumerate(HOSTILE_NAMES):
        pixels = rng.integers(0, 256, (16 + index, 20, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(root, name), format="PNG" if name.endswith(".png") else "JPEG")
    return root


def expected(folder: Path) -> set[str]:
    return {os.path.join(folder, name) for name in HOSTILE_NAMES}


def test_display_rule_is_reversible_and_safe():
    for name in HOSTILE_NAMES + ["plain.jpg", '"', ""]:
        shown = display_name(name)
        assert CONTROL.search(shown.encode("utf-8")) is None
        assert (json.loads(shown) if shown.startswith('"') else shown) == name
        assert json.loads(json_text(name)) == name
        json_text(name).encode("utf-8")  # valid UTF-8: no lone surrogate left


@pytest.mark.parametrize("fmt", ["--json", "--jsonl", "--csv", "--table"])
def test_every_format_round_trips_every_name(tiny_package, folder, fmt):
    run = cli("score", "-m", tiny_package, folder, fmt)
    raw = run.stdout
    if fmt != "--csv":  # CSV keeps a name's own bytes (the documented rule); the others are UTF-8
        raw.decode("utf-8")
    text = raw.decode("utf-8", "surrogateescape")
    if fmt == "--json":
        paths = [record["path"] for record in json.loads(text)]
    elif fmt == "--jsonl":
        paths = [json.loads(line)["path"] for line in text.splitlines()]
    elif fmt == "--csv":
        paths = [row["path"] for row in csv.DictReader(io.StringIO(text, newline=""))]
    else:
        assert CONTROL.search(raw) is None  # the table is for terminals: no control characters
        shown = [line[36:] for line in text.split("\n")[1:] if line]
        paths = [json.loads(cell) if cell.startswith('"') else cell for cell in shown]
    assert len(paths) == len(HOSTILE_NAMES)
    assert set(paths) == expected(folder)


def test_parquet_round_trips_every_name(tiny_package, folder, tmp_path):
    pytest.importorskip("pyarrow")
    from perceptlite.records.parquet import read_parquet

    out = tmp_path / "scores.parquet"
    cli("score", "-m", tiny_package, folder, "--jsonl", "--parquet", out)
    rows = read_parquet(out)
    assert {row["path"] for row in rows} == expected(folder)
    assert all(row["error"] is None for row in rows)


def test_merge_counts_each_image_once(tiny_package, folder, tmp_path):
    shards = []
    for index in range(2):
        shard = tmp_path / f"shard{index}.csv"
        cli("score", "-m", tiny_package, folder, "--csv", "--shard", f"{index}/2", "-o", shard)
        shards.append(shard)
    merged = tmp_path / "all.jsonl"
    cli("merge", *shards, "-o", merged, "--check", folder)
    paths = [json.loads(line)["path"] for line in merged.read_text(encoding="utf-8").splitlines()]
    assert sorted(paths) == sorted(expected(folder))


def test_filter_from_scores_moves_exactly_the_scored_files(tiny_package, folder, tmp_path):
    scores = tmp_path / "scores.csv"
    cli("score", "-m", tiny_package, folder, "--csv", "-o", scores)
    contents = {name: Path(os.path.join(folder, name)).read_bytes() for name in HOSTILE_NAMES}
    target = tmp_path / "kept"
    cli("filter", "--from-scores", scores, "--where", "iaa >= 0", "--move-to", target)
    assert sorted(os.listdir(folder)) == []
    assert {name: Path(os.path.join(target, name)).read_bytes() for name in os.listdir(target)} == contents


def test_filter_refuses_a_record_whose_file_is_gone(tiny_package, folder, tmp_path):
    scores = tmp_path / "scores.jsonl"
    cli("score", "-m", tiny_package, folder, "--jsonl", "-o", scores)
    os.rename(os.path.join(folder, HOSTILE_NAMES[0]), os.path.join(folder, "cr"))
    run = cli("filter", "--from-scores", scores, "--where", "iaa >= 0", "--copy-to", tmp_path / "copy", check_code=2)
    message = run.stderr.decode("utf-8")
    assert "no longer a file" in message and CONTROL.search(run.stderr) is None
    assert not (tmp_path / "copy").exists() or os.listdir(tmp_path / "copy") == []


def test_report_shows_every_name_safely(tiny_package, folder, tmp_path):
    report = tmp_path / "report.html"
    cli("report", "-m", tiny_package, folder, "-o", report)
    page = report.read_bytes().decode("utf-8")  # valid UTF-8
    assert CONTROL.search(page.encode("utf-8")) is None
    names = [html.unescape(value) for value in re.findall(r'data-name="([^"]*)"', page)]
    paths = {json.loads(name) if name.startswith('"') else name for name in names}
    assert paths == expected(folder)


def test_messages_escape_control_characters(tiny_package, tmp_path):
    bad = tmp_path / "out\x1b]0;pwned\x07.jsonl"
    os.mkdir(bad)  # a folder: cannot be written as -o
    run = cli("score", "-m", tiny_package, tmp_path, "--jsonl", "-o", bad, check_code=2)
    assert CONTROL.search(run.stderr.replace(b"\n", b"")) is None


def test_manifest_text_reaches_a_terminal_escaped(tmp_path):
    from _runtime_fixtures import make_package

    from perceptlite.package.manifest import MANIFEST_NAME

    package = make_package(tmp_path / "pkg")
    manifest = json.loads((package / MANIFEST_NAME).read_text())
    manifest["description"] = "evil \x1b]0;title\x07 \x9b31m text"
    manifest["provenance"]["teacher"] = "\x1b[2J"
    (package / MANIFEST_NAME).write_text(json.dumps(manifest))
    for args in (["models", "--path", package], ["models", "show", package]):
        run = cli(*args)
        assert CONTROL.search(run.stdout.replace(b"\n", b"")) is None, run.stdout
