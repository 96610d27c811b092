"""Every command ends cleanly (issue 23, class 5): real signals sent to real processes, closed and
broken standard streams, and write errors of `merge` on real (tmpfs) file systems."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from _runtime_fixtures import make_package, tiny_package  # noqa: F401  (pytest fixture)
from onnx import numpy_helper
from PIL import Image

from perceptlite.package.manifest import write_package

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
PERCEPTLITE = [sys.executable, "-m", "perceptlite"]
SIGNALS = [(signal.SIGINT, 130), (signal.SIGTERM, 143)]


def cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*PERCEPTLITE, *map(str, args)], env=ENV, capture_output=True, text=True, timeout=120, **kwargs)


def shell(script: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run `script` in bash with $PL standing for the perceptlite command."""
    env = dict(ENV, PL=" ".join(PERCEPTLITE))
    return subprocess.run(["bash", "-c", script], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def one_line_error(run: subprocess.CompletedProcess, code: int = 2) -> str:
    assert run.returncode == code, (run.returncode, run.stderr)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    return lines[0]


def start(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [*PERCEPTLITE, *map(str, args)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_until(process: subprocess.Popen, ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 90
    while not ready():
        assert process.poll() is None, f"ended before {what}: {process.stderr.read()!r}"
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.002)


def has_open(process: subprocess.Popen, wanted: Callable[[str], bool]) -> Callable[[], bool]:
    """True once the process holds a file descriptor on a path that `wanted` accepts."""

    def check() -> bool:
        folder = f"/proc/{process.pid}/fd"
        for fd in os.listdir(folder) if os.path.isdir(folder) else []:
            try:
                if wanted(os.readlink(os.path.join(folder, fd))):
                    return True
            except OSError:
                continue  # closed meanwhile
        return False

    return check


def deliver(process: subprocess.Popen, signum: int) -> str:
    """Send `signum` to a process held still (so it cannot finish first); its stderr once it ends."""
    process.send_signal(signal.SIGSTOP)
    process.send_signal(signum)
    process.send_signal(signal.SIGCONT)
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    return stderr.decode(errors="replace")


def assert_ended_by(process: subprocess.Popen, stderr: str, code: int) -> None:
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr and "Aborted!" not in stderr, stderr
    assert len([line for line in stderr.splitlines() if line.strip()]) <= 1, stderr


@pytest.fixture(scope="module")
def slow_folder(tmp_path_factory) -> Path:
    """400 names of one large uncompressed PNG: a run that takes a while without 400 files' disk."""
    folder = tmp_path_factory.mktemp("slow")
    big = folder / "big.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (800, 1000, 3), dtype=np.uint8)).save(big, compress_level=0)
    for index in range(400):
        os.link(big, folder / f"{index:04d}.png")
    big.unlink()
    return folder


@pytest.fixture(scope="module")
def heavy_package(tmp_path_factory) -> Path:
    """The tiny model with 256 MB of extra weights, so that loading it (hash check, session) takes a while."""
    folder = make_package(tmp_path_factory.mktemp("models") / "heavy")
    model = onnx.load(folder / "model.onnx")
    model.graph.initializer.append(numpy_helper.from_array(np.ones(64 << 20, dtype=np.float32), "ballast"))
    onnx.save(model, folder / "model.onnx")
    manifest = json.loads((folder / "perceptlite.json").read_text())
    manifest["files"] = list(manifest["files"])
    write_package(folder, manifest, (folder / "MODEL_CARD.md").read_text())
    return folder


def _records(paths: list[str]) -> str:
    return "".join(
        json.dumps({"path": path, "iaa": 50.0, "iqa": 50.0, "ista": 50.0, "width": 10, "height": 10, "error": None}) + "\n"
        for path in paths
    )


@pytest.mark.parametrize("signum, code", SIGNALS)
def test_score_interrupted_while_the_model_loads(heavy_package, slow_folder, tmp_path, signum, code):
    process = start("score", "-m", heavy_package, slow_folder, "-o", tmp_path / "out.jsonl")
    wait_until(process, has_open(process, lambda path: path.endswith("model.onnx")), "opened the model")
    assert_ended_by(process, deliver(process, signum), code)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("signum, code", SIGNALS)
@pytest.mark.parametrize("command", ["report", "filter"])
def test_report_and_filter_interrupted_while_scoring(tiny_package, slow_folder, tmp_path, command, signum, code):
    extra = ["-o", tmp_path / "page.html"] if command == "report" else ["--where", "iaa >= 0", "--copy-to", tmp_path / "picked"]
    process = start(command, "-m", tiny_package, slow_folder, "--jobs", "1", *extra)
    wait_until(process, has_open(process, lambda path: path.startswith(str(slow_folder))), "opened an image")
    assert_ended_by(process, deliver(process, signum), code)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("signum, code", SIGNALS)
def test_merge_interrupted_while_writing(tmp_path, signum, code):
    for index in range(2):
        (tmp_path / f"{index}.jsonl").write_text(_records([f"/photos/{index}/{n:07d}.jpg" for n in range(100_000)]))
    process = start("merge", tmp_path / "0.jsonl", tmp_path / "1.jsonl", "-o", tmp_path / "all.jsonl")
    wait_until(process, lambda: any(name.startswith(".pl-") for name in os.listdir(tmp_path)), "started writing")
    assert_ended_by(process, deliver(process, signum), code)
    assert sorted(os.listdir(tmp_path)) == ["0.jsonl", "1.jsonl"]


@pytest.mark.parametrize("signum, code", SIGNALS)
def test_interrupted_copy_leaves_no_partial_file(tmp_path, signum, code):
    source = tmp_path / "big"
    source.mkdir()
    chunk = os.urandom(1 << 20)
    with open(source / "0.jpg", "wb") as handle:
        for _ in range(48):
            handle.write(chunk)
    for index in range(1, 16):
        os.link(source / "0.jpg", source / f"{index}.jpg")
    scores = tmp_path / "scores.jsonl"
    scores.write_text(_records([str(source / f"{index}.jpg") for index in range(16)]))
    target = tmp_path / "picked"
    process = start("filter", "--from-scores", scores, "--where", "iaa >= 0", "--copy-to", target)
    temporary = has_open(process, lambda path: os.path.basename(path).startswith(".pl-"))
    wait_until(process, temporary, "started a copy")
    assert_ended_by(process, deliver(process, signum), code)
    left = os.listdir(target)
    assert not [name for name in left if name.startswith(".pl-")], left
    assert all((target / name).stat().st_size == 48 << 20 for name in left), "a partial copy kept its name"


# -- closed and broken standard streams ---------------------------------------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(5)
    for index in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    return folder


@pytest.mark.parametrize(
    "command",
    [
        "$PL score -m {model} {photos} >&-",
        "$PL filter -m {model} {photos} --where 'iaa >= 0' >&-",
        "$PL score -m {model} {photos} --jsonl >&- 2>&-; echo $? > rc",
    ],
)
def test_a_closed_stdout_is_one_line_before_any_work(tiny_package, photos, tmp_path, command):
    run = shell(command.format(model=tiny_package, photos=photos), tmp_path)
    if "rc" in command:
        assert (tmp_path / "rc").read_text().strip() == "2"
        return
    assert "stdout is closed" in one_line_error(run)


def test_a_closed_stdout_with_parquet_keeps_the_records(tiny_package, photos, tmp_path):
    pytest.importorskip("pyarrow")
    run = shell(f"$PL score -m {tiny_package} {photos} --parquet out.parquet >&-", tmp_path)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert (tmp_path / "out.parquet").stat().st_size > 0


@pytest.mark.parametrize("command", ["score", "report", "merge"])
def test_a_closed_stderr_never_fails_a_run(tiny_package, photos, tmp_path, command):
    scores = tmp_path / "scores.jsonl"
    assert cli("score", "-m", tiny_package, photos, "-o", scores).returncode == 0
    line = {
        "score": f"$PL score -m {tiny_package} {photos} -o out.jsonl",
        "report": f"$PL report --from-scores {scores} -o out.html",
        "merge": f"$PL merge {scores} -o out.jsonl",
    }[command]
    run = shell(line + " 2>&-", tmp_path)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / ("out.html" if command == "report" else "out.jsonl")).stat().st_size > 0


def test_score_into_head_ends_quietly(tiny_package, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    Image.new("RGB", (8, 8), (90, 120, 30)).save(folder / "one.png")
    for index in range(1500):  # well past a pipe's buffer of records
        os.link(folder / "one.png", folder / f"{index:05d}-{'x' * 60}.png")
    run = shell(f"$PL score -m {tiny_package} many --jsonl --batch-size 4 | head -1; echo ${{PIPESTATUS[0]}} >&2", tmp_path)
    assert run.stderr.splitlines()[-1] == "141", run.stderr
    assert "Traceback" not in run.stderr and "Exception ignored" not in run.stderr, run.stderr
    assert len(run.stdout.splitlines()) == 1


def test_filter_into_head_ends_quietly(tmp_path):
    (tmp_path / "scores.jsonl").write_text(_records([f"/photos/{n:06d}.jpg" for n in range(20_000)]))
    run = shell("$PL filter --from-scores scores.jsonl --where 'iaa >= 0' | head -1; echo ${PIPESTATUS[0]} >&2", tmp_path)
    assert run.stderr.splitlines() == ["141"], run.stderr
    assert run.stdout == "/photos/000000.jpg\n"


# -- write errors -------------------------------------------------------------------------------


@pytest.fixture()
def small_mount(tmp_path):
    """A 128 KiB tmpfs (needs root and mount; skipped otherwise)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(mount)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.fixture()
def shard(tmp_path) -> Path:
    path = tmp_path / "shard.jsonl"
    path.write_text(_records([f"/photos/{n:05d}.jpg" for n in range(3000)]))  # ~300 KB: more than the mount holds
    return path


@pytest.mark.parametrize("fault", ["missing folder", "read-only", "full disk", "name too long"])
def test_merge_write_errors_are_one_line_and_leave_nothing(shard, small_mount, fault):
    output = {
        "missing folder": small_mount / "nowhere" / "all.jsonl",
        "read-only": small_mount / "all.jsonl",
        "full disk": small_mount / "all.jsonl",
        "name too long": small_mount / ("n" * 300 + ".jsonl"),
    }[fault]
    if fault == "read-only":
        assert subprocess.run(["mount", "-o", "remount,ro", str(small_mount)]).returncode == 0
    line = one_line_error(cli("merge", shard, "-o", output))
    expected = {"missing folder": "no folder", "read-only": "read-only", "full disk": "space", "name too long": "too long"}[fault]
    assert expected in line.lower(), line
    assert os.listdir(small_mount) == []


@pytest.mark.parametrize("command", ["score", "report", "merge", "parquet"])
def test_the_longest_valid_output_name_works(tiny_package, photos, tmp_path, command):
    if command == "parquet":
        pytest.importorskip("pyarrow")
    scores = tmp_path / "scores.jsonl"
    assert cli("score", "-m", tiny_package, photos, "-o", scores).returncode == 0
    suffix = {"score": ".jsonl", "report": ".html", "merge": ".jsonl", "parquet": ".parquet"}[command]
    output = tmp_path / ("n" * (255 - len(suffix)) + suffix)  # NAME_MAX: 255 bytes
    args = {
        "score": ["score", "-m", tiny_package, photos, "-o", output],
        "report": ["report", "--from-scores", scores, "-o", output],
        "merge": ["merge", scores, "-o", output],
        "parquet": ["score", "-m", tiny_package, photos, "--parquet", output, "-o", tmp_path / "o.jsonl"],
    }[command]
    run = cli(*args)
    assert run.returncode == 0, run.stderr
    assert output.stat().st_size > 0
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]
