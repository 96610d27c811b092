"""Hostile use of outputs and inputs (issue 12, classes 1 and 5): `-o` onto FIFOs, devices, links
and input files; SIGTERM and Ctrl-C clean-up; FIFOs, sockets and devices inside a scored folder."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _runtime_fixtures import tiny_package  # noqa: F401  (pytest fixture)
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def score(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "perceptlite", "score", *map(str, args)],
        env=ENV,
        capture_output=True,
        timeout=timeout,
    )


@pytest.fixture()
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.png", "c.webp"):
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(folder / name)
    return folder


def _read_fifo(path: Path, into: list) -> threading.Thread:
    def reader() -> None:
        with open(path, "rb") as handle:
            into.append(handle.read())

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    return thread


def test_output_to_a_fifo_is_streamed_to_its_reader(tiny_package, photos, tmp_path):
    fifo = tmp_path / "scores.fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    thread = _read_fifo(fifo, received)
    run = score("-m", tiny_package, photos, "--jsonl", "-o", fifo)
    thread.join(timeout=60)
    assert run.returncode == 0, run.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # still a FIFO, not replaced by a regular file
    assert len(received[0].decode().splitlines()) == 3
    assert sorted(os.listdir(tmp_path)) == ["photos", "scores.fifo"]


def test_output_to_a_device_is_written_through(tiny_package, photos, tmp_path):
    device = tmp_path / "null"
    try:
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a second /dev/null
    except PermissionError:
        pytest.skip("creating a device node needs root")
    run = score("-m", tiny_package, photos, "--csv", "-o", device)
    assert run.returncode == 0, run.stderr
    assert stat.S_ISCHR(os.lstat(device).st_mode)
    assert sorted(os.listdir(tmp_path)) == ["null", "photos"]


def test_output_through_a_symlink_replaces_the_target_not_the_link(tiny_package, photos, tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    run = score("-m", tiny_package, photos, "--json", "-o", link)
    assert run.returncode == 0, run.stderr
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert len(json.loads(real.read_text())) == 3


@pytest.mark.parametrize("as_folder", [False, True])
def test_output_naming_an_input_image_is_refused_before_any_work(tiny_package, photos, as_folder):
    victim = photos / "b.png"
    before = victim.read_bytes()
    inputs = [photos] if as_folder else [photos / "a.jpg", victim]
    run = score("-m", tiny_package, *inputs, "--jsonl", "-o", victim)
    assert run.returncode == 2
    assert run.stdout == b""
    message = run.stderr.decode().strip().splitlines()
    assert len(message) == 1 and "b.png" in message[0] and "input" in message[0]
    assert victim.read_bytes() == before


def _slow_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "many"
    folder.mkdir()
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (800, 1000, 3), dtype=np.uint8)).save(big, compress_level=0)
    for i in range(400):  # hard links: a long run without writing 400 files
        os.link(big, folder / f"{i:04d}.png")
    big.unlink()
    return folder


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signals_clean_up_and_end_the_run(tiny_package, tmp_path, signum, code):
    """SIGTERM unwinds like Ctrl-C: no temporary file, the old output kept, exit 143 (130)."""
    folder = _slow_folder(tmp_path)
    out = tmp_path / "out.jsonl"
    out.write_text("old")
    process = subprocess.Popen(
        [sys.executable, "-m", "perceptlite", "score", "-m", str(tiny_package), str(folder), "--jsonl", "-o", str(out), "--jobs", "1"],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        while not any(n.startswith(".pl-") for n in os.listdir(tmp_path)):
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "the run never started writing"
            time.sleep(0.02)
        process.send_signal(signal.SIGSTOP)  # hold it mid-run, so the signal cannot arrive after the end
        process.send_signal(signum)
        process.send_signal(signal.SIGCONT)
        _, stderr = process.communicate(timeout=30)  # a generous bound: it must end, not hang
    finally:
        process.kill()
    assert process.returncode == code, stderr
    assert out.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["many", "out.jsonl"], stderr
    assert b"Traceback" not in stderr


def test_special_files_in_a_folder_get_error_records_and_never_block(tiny_package, photos, tmp_path):
    os.mkfifo(photos / "x.jpg")  # no writer: opening it for reading would block forever
    (photos / "link.png").symlink_to(photos / "x.jpg")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(photos / "s.jpeg"))
    try:
        run = score("-m", tiny_package, photos, "--jsonl", timeout=60)
        direct = score("-m", tiny_package, photos / "x.jpg", "--cache", tmp_path / "c.db", "--jsonl", timeout=60)
    finally:
        server.close()
    assert run.returncode == 1, run.stderr
    records = {Path(r["path"]).name: r for r in map(json.loads, run.stdout.decode().splitlines())}
    assert set(records) == {"a.jpg", "b.png", "c.webp", "link.png", "s.jpeg", "x.jpg"}
    assert "FIFO" in records["x.jpg"]["error"] and "FIFO" in records["link.png"]["error"]
    assert "socket" in records["s.jpeg"]["error"]
    assert all(records[n]["error"] is None for n in ("a.jpg", "b.png", "c.webp"))
    assert direct.returncode == 1 and "FIFO" in direct.stdout.decode()


def test_a_fifo_as_cache_is_refused_not_opened(tiny_package, photos, tmp_path):
    fifo = tmp_path / "cache.db"
    os.mkfifo(fifo)
    run = score("-m", tiny_package, photos, "--jsonl", "--cache", fifo, timeout=60)
    assert run.returncode == 2 and b"not a regular file" in run.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
