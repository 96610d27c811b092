"""Disk and numeric faults end cleanly; the Python API keeps the CLI's promises (issue 12, classes 7 and 8)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from _runtime_fixtures import tiny_package  # noqa: F401  (pytest fixture)
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from perceptlite.package.manifest import write_package
from perceptlite.scorer import Scorer

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "perceptlite", *map(str, args)], env=ENV, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def one_line_error(run: subprocess.CompletedProcess, code: int = 2) -> str:
    assert run.returncode == code, (run.returncode, run.stderr)
    assert "Traceback" not in run.stderr, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    return lines[0]


@pytest.fixture()
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(4)
    for index in range(40):
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(folder / f"{index:03d}.png")
    return folder


# -- numeric faults ---------------------------------------------------------------------------


def _nan_package(folder: Path) -> Path:
    """scores = [log(m), sqrt(m - 0.5), m] of the per-channel means m: a black image gives -inf and NaN."""
    folder.mkdir()
    nodes = [
        helper.make_node("ReduceMean", ["pixels", "axes"], ["m"], keepdims=0),
        helper.make_node("Log", ["m"], ["log"]),
        helper.make_node("Sub", ["m", "half"], ["shifted"]),
        helper.make_node("Sqrt", ["shifted"], ["root"]),
        helper.make_node("Concat", ["log", "root", "m"], ["scores"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "nan",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 9])],
        [
            numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes"),
            numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, folder / "model.onnx")
    manifest = {
        "name": "nan",
        "version": "1",
        "backend": "onnx",
        "files": ["model.onnx"],
        "variants": {"fp32": "model.onnx"},
        "default_variant": "fp32",
        "input": {"size": [16, 16], "mean": [0, 0, 0], "std": [1, 1, 1]},
        "outputs": {
            axis: {"tensor": "scores", "index": 3 * i, "calibration": {"scale": 10.0, "offset": 50.0}}
            for i, axis in enumerate(("iaa", "iqa", "ista"))
        },
    }
    return write_package(folder, manifest, "# nan\n")


def test_nan_and_infinite_model_output_become_error_records(tmp_path):
    package = _nan_package(tmp_path / "pkg")
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (20, 20), (0, 0, 0)).save(folder / "black.png")
    Image.new("RGB", (20, 20), (255, 255, 255)).save(folder / "white.png")
    cache = tmp_path / "c.db"
    for fmt in ("--json", "--jsonl", "--csv"):
        run = cli("score", "-m", package, folder, fmt, "--cache", cache)
        assert run.returncode == 1, run.stderr
        assert "NaN" not in run.stdout.replace("(NaN or Infinity)", "") and "Infinity" not in run.stdout.replace("(NaN or Infinity)", "")
    records = json.loads(cli("score", "-m", package, folder, "--json").stdout, parse_constant=lambda name: pytest.fail(name))
    by_name = {Path(r["path"]).name: r for r in records}
    assert by_name["black.png"]["iaa"] is None and "not a number" in by_name["black.png"]["error"]
    assert by_name["white.png"]["error"] is None and by_name["white.png"]["iaa"] == 50.0


def test_report_and_filter_accept_missing_and_nan_scores(tmp_path, photos):
    names = sorted(os.listdir(photos))
    lines = [
        f'{{"path": "{photos / names[0]}", "iaa": NaN, "iqa": 40.0, "ista": 10.0, "width": 16, "height": 12, "error": null}}',
        f'{{"path": "{photos / names[1]}", "iaa": 70.0, "width": 16, "height": 12}}',
        f'{{"path": "{photos / names[2]}", "iaa": 20.0, "iqa": Infinity, "ista": 5.0, "width": 16, "height": 12, "error": null}}',
    ]
    jsonl = tmp_path / "scores.jsonl"
    jsonl.write_text("\n".join(lines) + "\n")
    csv_file = tmp_path / "scores.csv"
    csv_file.write_text(f"path,iaa,iqa,ista,width,height,error\n{photos / names[0]},nan,,3,16,12,\n{photos / names[1]},70,inf,4,16,12,\n")
    for scores in (jsonl, csv_file):
        top = cli("filter", "--from-scores", scores, "--top", "1", "--by", "iaa")
        assert top.returncode == 0 and top.stdout.strip() == str(photos / names[1]), top.stderr
        where = cli("filter", "--from-scores", scores, "--where", "iqa >= 0")
        assert where.returncode == 0, where.stderr
        report = cli("report", "--from-scores", scores, "-o", tmp_path / f"{scores.suffix[1:]}.html")
        assert report.returncode == 0, report.stderr


@pytest.mark.parametrize("expression", ["(" * 500 + "iaa > 1" + ")" * 500, "not " * 500 + "iaa > 1", "(" * 100_000])
def test_deeply_nested_where_is_a_one_line_error(tmp_path, expression):
    run = cli("filter", "--from-scores", tmp_path / "none.jsonl", "--where", expression)
    assert "nested more than" in one_line_error(run, code=2) or "expected" in run.stderr


# -- disk faults ------------------------------------------------------------------------------


@pytest.fixture()
def full_disk(tmp_path):
    """A 256 KiB tmpfs with about 2 KiB left (needs root and mount; skipped otherwise)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        with open(mount / "filler", "wb") as handle:
            try:
                handle.write(b"\0" * (256 * 1024 - 2048))
            except OSError:
                pass
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.mark.parametrize("option", ["-o", "--parquet", "--cache"])
def test_disk_full_is_one_line_and_leaves_nothing(tiny_package, photos, full_disk, option):
    if option == "--parquet":
        pytest.importorskip("pyarrow")
    target = full_disk / {"-o": "out.jsonl", "--parquet": "out.parquet", "--cache": "c.db"}[option]
    run = cli("score", "-m", tiny_package, photos, "--jsonl", option, target)
    line = one_line_error(run)
    assert "space" in line.lower() or "full" in line.lower(), line
    left = sorted(set(os.listdir(full_disk)) - {"filler"})
    assert left in ([], ["c.db"]), left  # an empty new cache file may stay; no temp, WAL or partial file


def test_output_to_dev_full_is_one_line(tiny_package, photos):
    run = cli("score", "-m", tiny_package, photos, "--csv", "-o", "/dev/full")
    assert "space" in one_line_error(run).lower()


def test_library_warnings_stay_off_stderr(tiny_package, tmp_path):
    folder = tmp_path / "warn"
    folder.mkdir()
    image = Image.new("RGB", (64, 64), (1, 2, 3))
    image.save(folder / "truncated.tif", compression="raw")
    data = (folder / "truncated.tif").read_bytes()
    (folder / "truncated.tif").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (9500, 9500)).save(folder / "bomb-sized.png")  # above Pillow's warning limit, below ours
    exif = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00\xff\xff"
    Image.new("RGB", (32, 32)).save(folder / "corrupt-exif.jpg", exif=exif)
    run = cli("score", "-m", tiny_package, folder, "--jsonl", "-q")
    assert run.stderr == "", run.stderr
    api = "import sys; from perceptlite import Scorer; list(Scorer(sys.argv[1]).score_many(sorted(__import__('glob').glob(sys.argv[2] + '/*'))))"
    run = subprocess.run([sys.executable, "-c", api, str(tiny_package), str(folder)], env=ENV, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stderr == "", run.stderr


# -- the Python API ---------------------------------------------------------------------------


def test_api_max_pixels_covers_arrays_and_pil_images(tiny_package):
    scorer = Scorer(tiny_package, device="cpu", max_pixels=1000)
    for image in (np.zeros((40, 40, 3), np.uint8), Image.new("RGB", (40, 40))):
        result = scorer.score(image)
        assert result.error is not None and "limit" in result.error and result.iaa is None
    results = list(scorer.score_many([np.zeros((40, 40, 3), np.uint8), np.zeros((20, 20, 3), np.uint8)]))
    assert results[0].error is not None and results[1].error is None


def test_api_empty_images_are_errors_not_scores(tiny_package):
    scorer = Scorer(tiny_package, device="cpu")
    for image in (Image.new("RGB", (0, 0)), Image.new("RGB", (0, 10)), np.zeros((0, 0, 3), np.uint8)):
        result = scorer.score(image)
        assert result.iaa is None and "empty image" in result.error
    with pytest.raises(ValueError):
        scorer.score(np.zeros((4, 4), np.float32))  # a wrong dtype stays the caller's bug
