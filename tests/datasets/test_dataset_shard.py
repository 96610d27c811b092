"""Shards cover every file exactly once; `merge` joins them; Parquet output round-trips."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from _dataset_fixtures import build_tiny_package, make_images, run_cli

from perceptlite.datasets.cache import model_key
from perceptlite.package.manifest import load_package

pq = pytest.importorskip("pyarrow.parquet", reason="the parquet extra (pyarrow) is not installed")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return build_tiny_package(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("shards") / "images"
    make_images(folder, 40, subfolders=4)
    (folder / "part1" / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_shards_cover_every_file_once_and_merge_back(tmp_path, model, images):
    full = run_cli("score", images, "-m", model, "--jsonl", check=False)
    assert full.returncode == 1  # one broken file
    everything = jsonl(full.stdout)
    assert len(everything) == 41

    outputs = []
    for index, suffix in enumerate([".jsonl", ".csv", ".parquet"]):
        output = tmp_path / f"shard{index}{suffix}"
        flag = {".jsonl": "--jsonl", ".csv": "--csv", ".parquet": "--jsonl"}[suffix]
        args = ["-o", output] if suffix != ".parquet" else ["--parquet", output, "-q"]
        run_cli("score", images, "-m", model, "--shard", f"{index}/3", flag, *args, check=False)
        outputs.append(output)
    shard_paths = [
        [r["path"] for r in jsonl(outputs[0].read_text())],
        [row["path"] for row in csv.DictReader(outputs[1].open(newline=""))],
        pq.read_table(outputs[2]).column("path").to_pylist(),
    ]
    assert all(shard_paths), "every shard got some files"
    flat = [path for paths in shard_paths for path in paths]
    assert sorted(flat) == sorted(r["path"] for r in everything) and len(set(flat)) == len(flat)

    merged = tmp_path / "merged.jsonl"
    run_cli("merge", *outputs, "-o", merged, "--check", images)
    assert jsonl(merged.read_text()) == everything  # deterministic: the order of an unsharded run

    duplicate = run_cli("merge", outputs[0], outputs[1], outputs[0], "-o", tmp_path / "dup.jsonl", check=False)
    assert duplicate.returncode != 0 and "also in" in duplicate.stderr and "Traceback" not in duplicate.stderr
    missing = run_cli("merge", outputs[0], outputs[2], "-o", tmp_path / "missing.jsonl", "--check", images, check=False)
    assert missing.returncode != 0 and "in no output" in missing.stderr
    assert not (tmp_path / "dup.jsonl").exists() and not (tmp_path / "missing.jsonl").exists()


def test_parquet_has_the_csv_columns_plus_model(tmp_path, model, images):
    parquet = tmp_path / "scores.parquet"
    run_cli("score", images, "-m", model, "--csv", "-o", tmp_path / "scores.csv", "--parquet", parquet, check=False)
    table = pq.read_table(parquet)
    with open(tmp_path / "scores.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert table.column_names == list(rows[0]) + ["model", "model_hash", "path_bytes"]
    package = load_package(model)
    assert set(table.column("model").to_pylist()) == {package.name}
    assert set(table.column("model_hash").to_pylist()) == {model_key(package)}  # the cache's key: variant, weights, calibration
    for row, record in zip(rows, table.to_pylist()):
        assert record["path"] == row["path"]
        for name in ("iaa", "iqa", "ista", "width", "height"):
            assert (record[name] is None and row[name] == "") or float(row[name]) == record[name]
        assert (record["error"] or "") == row["error"]
    broken = [r for r in table.to_pylist() if r["error"]]
    assert len(broken) == 1 and broken[0]["iaa"] is None

    merged = tmp_path / "merged.parquet"  # Parquet in, Parquet out keeps the model columns
    run_cli("merge", parquet, "-o", merged)
    assert pq.read_table(merged).to_pylist() == table.to_pylist()
    back = tmp_path / "back.csv"
    run_cli("merge", merged, "-o", back)
    assert back.read_text(encoding="utf-8") == (tmp_path / "scores.csv").read_text(encoding="utf-8")

    only = tmp_path / "only.parquet"  # -o FILE.parquet: the extension picks Parquet (issue 13)
    assert run_cli("score", images, "-m", model, "-o", only, check=False).returncode == 1  # the broken file
    assert pq.read_table(only).to_pylist() == table.to_pylist()


def test_missing_pyarrow_gives_the_install_command(tmp_path, model, images):
    code = "import sys; sys.modules['pyarrow'] = None; sys.modules['pyarrow.parquet'] = None\nfrom perceptlite.cli import main; main()\n"
    run = subprocess.run(
        [sys.executable, "-c", code, "score", str(images), "-m", str(model), "--parquet", str(tmp_path / "x.parquet"), "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert 'pip install "perceptlite[parquet]"' in run.stderr and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
