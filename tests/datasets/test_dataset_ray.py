"""Ray Data integration on a local Ray instance: same scores as the plain CLI, from paths or bytes."""

from __future__ import annotations

import json
import os

import pytest
from _dataset_fixtures import build_tiny_package, make_images, run_cli

ray = pytest.importorskip("ray", reason="the ray extra is not installed")
pq = pytest.importorskip("pyarrow.parquet", reason="the parquet extra (pyarrow) is not installed")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Data warns about its own settings


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    yield ray
    ray.shutdown()


def test_ray_scores_match_the_cli(tmp_path, local_ray):
    from perceptlite.ray_data import score_dataset

    model = build_tiny_package(tmp_path / "model")
    images = tmp_path / "images"
    make_images(images, 36, size=80)  # larger than 2x the input: JPEG draft decoding is exercised
    (images / "part0" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    cli = run_cli("score", images, "-m", model, "--jsonl", check=False)
    expected = {record["path"]: record for record in map(json.loads, cli.stdout.splitlines())}
    assert len(expected) == 37

    from_bytes = ray.data.read_binary_files(str(images), include_paths=True, file_extensions=["jpg", "png"])
    output = tmp_path / "scores-parquet"
    score_dataset(from_bytes, model, concurrency=1, num_cpus=1, batch_size=16).write_parquet(str(output))
    rows = pq.read_table(output).to_pylist()

    from_paths = ray.data.from_items([{"path": path} for path in sorted(expected)])
    rows_from_paths = score_dataset(from_paths, model, concurrency=1, batch_size=8).take_all()

    for produced in (rows, rows_from_paths):
        assert sorted(os.path.normpath(row["path"]) for row in produced) == sorted(expected)
        for row in produced:
            record = expected[os.path.normpath(row["path"])]
            assert (row["error"] is None) == (record["error"] is None)
            assert row["model"] == "tiny-dataset" and len(row["model_hash"]) == 32
            if record["error"] is None:
                assert (row["width"], row["height"]) == (record["width"], record["height"])
                for axis in ("iaa", "iqa", "ista"):
                    assert row[axis] == pytest.approx(record[axis], abs=0.006)  # the CLI rounds to 2 decimals
