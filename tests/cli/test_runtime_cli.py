"""`perceptlite score` / `perceptlite models`: formats, atomic -o, exit codes, a hostile folder."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from _runtime_fixtures import tiny_package  # noqa: F401  (pytest fixture)
from click.testing import CliRunner
from PIL import Image

from perceptlite.cli import main
from perceptlite.records import FIELDS


def _run(*args: str, env: dict | None = None):
    runner = CliRunner()
    return runner.invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i, name in enumerate(["a.jpg", "b.PNG", "sub/c.webp", "sub/d.jpeg", "ünïcødé 照片.jpg"]):
        path = root / name
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40 + i, 50 + i, 3), dtype=np.uint8)).save(path)
    (root / "readme.txt").write_text("not scored")
    return root


def _bomb(path: Path) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 60_000, 60_000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    Image.new("RGB", (30, 20), (200, 10, 10)).save(root / "good.jpg")
    Image.new("RGBA", (30, 20), (0, 0, 0, 0)).save(root / "transparent.png")
    _bomb(root / "bomb.png")
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (root / "truncated.jpg").write_bytes(buffer.getvalue()[:3000])
    (root / "zero.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("hello, I am not a JPEG\n")
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "self.jpg").symlink_to(root / "self.jpg")
    (root / "dangling.png").symlink_to(root / "nowhere.png")
    Image.new("L", (10, 10), 128).save(root / "日本語 ñame.png")
    (root / ".hidden.jpg").write_text("skipped unless --hidden")
    return root


def test_table_is_the_default(tiny_package, photos):
    result = _run("score", "-m", tiny_package, photos)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["iaa", "iqa", "ista", "width", "height", "path"]
    assert len(lines) == 6 and lines[-1].endswith("ünïcødé 照片.jpg")


def test_json_round_trip(tiny_package, photos):
    result = _run("score", "-m", tiny_package, photos, "--json", "--jobs", "3", "--batch-size", "2")
    assert result.exit_code == 0
    records = json.loads(result.stdout)
    assert [Path(r["path"]).relative_to(photos).as_posix() for r in records] == [
        "a.jpg",
        "b.PNG",
        "sub/c.webp",
        "sub/d.jpeg",
        "ünïcødé 照片.jpg",
    ]
    for record in records:
        assert list(record) == list(FIELDS)
        assert record["error"] is None and all(0 <= record[a] <= 100 for a in ("iaa", "iqa", "ista"))
    assert (records[0]["width"], records[0]["height"]) == (50, 40)


def test_jsonl_and_csv_round_trips(tiny_package, photos):
    jsonl = _run("score", "-m", tiny_package, photos, "--jsonl")
    rows = [json.loads(line) for line in jsonl.stdout.splitlines()]
    table = _run("score", "-m", tiny_package, photos, "--csv")
    parsed = list(csv.DictReader(io.StringIO(table.stdout)))
    assert tuple(parsed[0]) == FIELDS
    assert [r["path"] for r in parsed] == [r["path"] for r in rows]
    assert [float(r["iaa"]) for r in parsed] == [r["iaa"] for r in rows]
    assert all(r["error"] == "" for r in parsed)


def test_empty_json_is_valid(tiny_package, tmp_path):
    result = _run("score", "-m", tiny_package, tmp_path, "--json")
    # Valid JSON, but an empty folder is not success (issue 13): exit 2, one line on stderr.
    assert result.exit_code == 2 and json.loads(result.stdout) == []
    assert result.stderr.strip() == "perceptlite: no image files found"


def test_hostile_folder(tiny_package, hostile):
    result = _run("score", "-m", tiny_package, hostile, "--json")
    assert result.exit_code == 1
    records = {Path(r["path"]).name: r for r in json.loads(result.stdout)}
    assert set(records) == {
        "bomb.png",
        "dangling.png",
        "good.jpg",
        "self.jpg",
        "text.jpg",
        "transparent.png",
        "truncated.jpg",
        "zero.jpg",
        "日本語 ñame.png",
    }
    expected_errors = {
        "bomb.png": "megapixels",
        "dangling.png": "broken symbolic link",
        "self.jpg": "loop",
        "text.jpg": "not an image",
        "truncated.jpg": "truncated",
        "zero.jpg": "empty file",
    }
    for name, record in records.items():
        if name in expected_errors:
            assert expected_errors[name] in record["error"], (name, record["error"])
            assert "\n" not in record["error"] and record["iaa"] is None
        else:
            assert record["error"] is None and record["iaa"] is not None, name
    assert "Traceback" not in result.output
    with_hidden = json.loads(_run("score", "-m", tiny_package, hostile, "--json", "--hidden").stdout)
    assert any(Path(r["path"]).name == ".hidden.jpg" for r in with_hidden)


def test_max_pixels_option(tiny_package, photos):
    result = _run("score", "-m", tiny_package, photos / "a.jpg", "--jsonl", "--max-pixels", "1000")
    assert result.exit_code == 1 and "max-pixels" in json.loads(result.stdout)["error"]


def test_output_file_is_atomic(tiny_package, photos, hostile, tmp_path):
    out = tmp_path / "scores.json"
    out.write_text("precious old results")
    result = _run("score", "-m", tiny_package, photos, "--json", "-o", out)
    assert result.exit_code == 0 and result.stdout == ""
    assert len(json.loads(out.read_text(encoding="utf-8"))) == 5
    assert sorted(os.listdir(tmp_path)) == ["scores.json"]  # no temp file left behind
    # A run that fails before finishing leaves the old file exactly as it was.
    out.write_text("precious old results")
    failing = _run("score", "-m", tiny_package, photos, "--json", "-o", out, "--device", "cuda") if not _has_cuda() else None
    if failing is not None:
        assert failing.exit_code == 2
        assert out.read_text() == "precious old results"


def test_interrupted_run_keeps_the_old_file(tiny_package, tmp_path):
    """Kill a real `perceptlite score -o` mid-run: the existing output file must survive untouched."""
    folder = tmp_path / "many"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (1000, 1200, 3), dtype=np.uint8)).save(tmp_path / "big.png", compress_level=0)
    for i in range(600):  # hard links: a long run without writing 600 files
        os.link(tmp_path / "big.png", folder / f"{i:04d}.png")
    (tmp_path / "big.png").unlink()
    out = tmp_path / "out.csv"
    out.write_text("old")
    process = subprocess.Popen(
        [sys.executable, "-m", "perceptlite", "score", "-m", str(tiny_package), str(folder), "--csv", "-o", str(out), "--jobs", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # Background jobs of a shell start with SIGINT ignored: restore Python's Ctrl-C handling.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        while not any(n.startswith(".pl-") for n in os.listdir(tmp_path)):
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert out.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["many", "out.csv"], stderr
    assert b"Traceback" not in stderr


def _has_cuda() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def test_exit_codes_and_messages(tiny_package, photos, tmp_path):
    assert _run("score", "-m", tiny_package, photos).exit_code == 0
    assert _run("score", "-m", tiny_package, tmp_path / "missing").exit_code == 2
    assert _run("score", "-m", tiny_package, photos, "--shard", "5/2").exit_code == 2
    assert _run("score", "-m", tiny_package, photos, "--json", "--csv").exit_code == 0  # the last flag wins
    no_model = _run("score", "-m", tmp_path / "nope", photos)
    assert no_model.exit_code == 2 and "no such model package folder" in no_model.stderr
    assert len(no_model.stderr.strip().splitlines()) == 1
    if not _has_cuda():
        cuda = _run("score", "-m", tiny_package, photos, "--device", "cuda")
        assert cuda.exit_code == 2 and "no CUDA provider" in cuda.stderr


def test_shards_cover_the_folder(tiny_package, photos):
    everything = json.loads(_run("score", "-m", tiny_package, photos, "--json").stdout)
    parts = [json.loads(_run("score", "-m", tiny_package, photos, "--json", "--shard", f"{i}/2").stdout) for i in range(2)]
    assert sorted(r["path"] for r in parts[0] + parts[1]) == sorted(r["path"] for r in everything)


def test_models_list_and_show(tiny_package, tmp_path):
    listing = _run("models", "--path", tiny_package.parent)
    assert listing.exit_code == 0 and "tiny" in listing.stdout and "onnx" in listing.stdout
    shown = _run("models", "show", tiny_package)
    assert shown.exit_code == 0
    assert "tiny 0.0.1" in shown.stdout and "64x64 stretch" in shown.stdout and "hashes:      ok" in shown.stdout
    as_json = json.loads(_run("models", "show", tiny_package, "--json").stdout)
    assert as_json["name"] == "tiny"
    missing = _run("models", "show", "no-such-model")
    assert missing.exit_code == 2 and "no model package named" in missing.stderr


def test_console_script_end_to_end(tiny_package, photos):
    """The real entry point in a fresh process, as a user runs it."""
    process = subprocess.run(
        [sys.executable, "-m", "perceptlite", "score", "--model", str(tiny_package), str(photos), "--jsonl", "--quiet"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
    )
    assert process.returncode == 0, process.stderr
    assert process.stderr == ""
    assert len(process.stdout.splitlines()) == 5


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_progress_bar_only_on_a_terminal(tiny_package, photos):
    import fcntl
    import pty
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    try:
        process = subprocess.run(
            [sys.executable, "-m", "perceptlite", "score", "-m", str(tiny_package), str(photos), "--jsonl"],
            stdout=subprocess.PIPE,
            stderr=slave,
            timeout=120,
        )
        os.close(slave)
        slave = None
        terminal = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO once the writer is gone (Linux)
                break
            if not chunk:
                break
            terminal += chunk
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    assert process.returncode == 0
    assert b"img" in terminal and b"5 scored" in terminal  # the tqdm bar and the summary
    assert len(process.stdout.splitlines()) == 5 and b"img/s" not in process.stdout


@pytest.mark.parametrize("suffix, kind", [(".json", "json"), (".jsonl", "jsonl"), (".csv", "csv"), (".txt", "table")])
def test_output_format_follows_the_extension(tiny_package, photos, tmp_path, suffix, kind):
    """-o FILE.json writes JSON (not a table); a format flag wins over the extension."""
    out = tmp_path / f"scores{suffix}"
    assert _run("score", "-m", tiny_package, photos, "-o", out).exit_code == 0
    text = out.read_text()
    if kind == "json":
        assert [r["path"] for r in json.loads(text)] and text.startswith("[")
    elif kind == "jsonl":
        assert all(json.loads(line)["path"] for line in text.splitlines())
    elif kind == "csv":
        assert text.splitlines()[0] == ",".join(FIELDS)
    else:
        assert text.split("\n", 1)[0].split() == ["iaa", "iqa", "ista", "width", "height", "path"]
    flagged = tmp_path / f"flagged{suffix}"
    assert _run("score", "-m", tiny_package, photos, "--csv", "-o", flagged).exit_code == 0
    assert flagged.read_text().splitlines()[0] == ",".join(FIELDS)


def test_every_command_exits_2_on_a_missing_model_and_no_images(tiny_package, photos, tmp_path):
    """One convention (issue 13): a model that cannot be found, or no image files, is exit 2 with
    one 'perceptlite: ...' line, in every command that takes a model."""
    empty = tmp_path / "empty"
    empty.mkdir()
    vr = tmp_path / "vr.json"
    vr.write_text(json.dumps([{"image": "a.jpg", "gt_score": 1}, {"image": "b.PNG", "gt_score": 2}]))
    runs = {
        "score": ["score", photos],
        "filter": ["filter", photos, "--where", "iaa > 0"],
        "report": ["report", photos, "-o", tmp_path / "r.html"],
        "eval": ["eval", vr, "--images", photos],
        "ask": ["ask", photos / "a.jpg", "What is it?"],
    }
    for name, args in {**runs, "models show": ["models", "show"]}.items():
        result = _run(*args, *(["-m"] if name != "models show" else []), "./no-such-model")
        assert result.exit_code == 2, (name, result.output)
        assert result.stderr.strip().startswith("perceptlite: ") and len(result.stderr.strip().splitlines()) == 1, (name, result.stderr)
    for args in (["score", empty], ["filter", empty, "--where", "iaa > 0"], ["report", empty, "-o", tmp_path / "e.html"]):
        result = _run(*args, "-m", tiny_package)
        assert result.exit_code == 2 and "no image files found" in result.stderr, (args, result.output)
    assert _run("eval", vr, "--images", photos, "-m", tiny_package).exit_code == 0
    vr.write_text(json.dumps([{"image": "a.jpg", "gt_score": 1}, {"image": "b.PNG", "gt_score": 2}, {"image": "gone.jpg", "gt_score": 3}]))
    assert _run("eval", vr, "--images", photos, "-m", tiny_package).exit_code == 1  # some files failed
