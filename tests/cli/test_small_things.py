"""Small things users hit (issue 23, class 10): hostile `report --title`, escape sequences in what
`eval` prints, `-o newdir/`, and the same file given twice."""

from __future__ import annotations

import json
import os
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
    """Run perceptlite with raw-byte arguments allowed; stdout and stderr come back as bytes."""
    command = [os.fsencode(sys.executable), b"-m", b"perceptlite"]
    command += [arg if isinstance(arg, bytes) else os.fsencode(str(arg)) for arg in args]
    return subprocess.run(command, env=ENV, cwd=cwd, capture_output=True, timeout=120)


def one_line_error(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 2, (run.returncode, run.stderr)
    lines = [line for line in run.stderr.decode().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in lines[0], run.stderr
    return lines[0]


@pytest.fixture()
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(13)
    for index in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    return folder


@pytest.mark.parametrize(
    "title, shown",
    [
        (b"caf\xe9 \xff photos", "caf\ufffd \ufffd photos"),  # Latin-1 bytes: not UTF-8
        (b"red \x1b[31mALERT\x1b[0m\x07", "red \\u001b[31mALERT\\u001b[0m\\u0007"),
        (b"two\nlines\tand\rreturns", "two lines and returns"),
        ("\u202eevil".encode(), "\\u202eevil"),  # a right-to-left override
    ],
)
def test_report_title_is_shown_as_safe_text(tiny_package, photos, tmp_path, title, shown):
    page = tmp_path / "page.html"
    run = cli("report", "-m", tiny_package, photos, "-o", page, "--title", title)
    assert run.returncode == 0, run.stderr
    html = page.read_bytes().decode("utf-8")  # the page is valid UTF-8
    assert f"<title>{shown}</title>" in html
    assert not any(char in html for char in "\x1b\x07\r\u202e")


def test_eval_never_echoes_escape_sequences(tiny_package, photos, tmp_path):
    vr = tmp_path / "ev\x1b]0;pwned\x07il\x1b[2J.json"
    vr.write_text(json.dumps([{"image": f"{n}.png", "gt_score": n} for n in range(3)]))
    for extra in ([], ["--json"]):
        run = cli("eval", vr, "--images", photos, "-m", tiny_package, "--axis", "iaa", *extra)
        assert run.returncode == 0, run.stderr
        assert b"\x1b" not in run.stdout and b"\x07" not in run.stdout
        assert b"\\u001b]0;pwned" in run.stdout
    missing = tmp_path / "vr\x1b[2J.json"
    missing.write_text(json.dumps([{"image": "gone\x1b[2J.png", "gt_score": 1}]))
    run = cli("eval", missing, "--images", photos, "-m", tiny_package)
    assert b"\x1b" not in run.stdout + run.stderr


@pytest.mark.parametrize("command", ["score", "report", "merge", "parquet"])
def test_an_output_naming_a_folder_is_refused(tiny_package, photos, tmp_path, command):
    if command == "parquet":
        pytest.importorskip("pyarrow")
    scores = tmp_path / "scores.jsonl"
    assert cli("score", "-m", tiny_package, photos, "-o", scores).returncode == 0
    before = sorted(os.listdir(tmp_path))
    args = {
        "score": ["score", "-m", tiny_package, photos, "-o", "newdir/"],
        "report": ["report", "--from-scores", scores, "-o", "newdir/"],
        "merge": ["merge", scores, "-o", "newdir/"],
        "parquet": ["score", "-m", tiny_package, photos, "--parquet", "newdir/"],
    }[command]
    assert "folder" in one_line_error(cli(*args, cwd=tmp_path))
    assert sorted(os.listdir(tmp_path)) == before  # no file called newdir
    (tmp_path / "olddir").mkdir()
    args[args.index("newdir/")] = "olddir"
    run = cli(*args, cwd=tmp_path)
    assert run.returncode == 2 and b"directory" in run.stderr, run.stderr  # click's usage error
    assert os.listdir(tmp_path / "olddir") == []


def test_the_same_file_given_twice_is_scored_once(tiny_package, photos, tmp_path):
    (tmp_path / "also").symlink_to(photos, target_is_directory=True)
    given = [photos / "0.png", photos / "0.png", f"{photos}/./0.png", tmp_path / "also" / "0.png", photos]
    run = cli("score", "-m", tiny_package, *given, "-o", tmp_path / "a.jsonl")
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert sorted(Path(record["path"]).name for record in records) == ["0.png", "1.png", "2.png"]
    assert cli("score", "-m", tiny_package, photos / "1.png", photos / "1.png", "-o", tmp_path / "b.jsonl").returncode == 0
    merged = cli("merge", tmp_path / "a.jsonl", "-o", tmp_path / "all.jsonl")
    assert merged.returncode == 0, merged.stderr  # merge accepts what score wrote
    listed = cli("filter", "-m", tiny_package, photos / "2.png", photos, "--where", "iaa >= 0")
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 3, listed.stdout
