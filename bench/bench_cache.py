"""Benchmark the score cache: scoring N small images cold (empty cache) versus warm (all cached).

    python bench/bench_cache.py                         # 10,000 images of 96x72, the bundled model
    python bench/bench_cache.py --model FOLDER --count 2000

Writes N small JPEGs to a temporary folder, loads the model once, then runs the score pipeline
twice over the folder with one `--cache` file, writing JSONL to /dev/null as the CLI does: first
with an empty cache (every image decoded and scored, results stored), then again (every image a
cache hit). Prints both rates, their ratio (target: warm >= 20x cold) and the wall time of a warm
`perceptlite score --cache` command in a fresh process. Without the bundled default model it uses
the stand-in of bench_score.py (the student's architecture and cost, random weights), and says so.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from perceptlite import Scorer  # noqa: E402
from perceptlite.datasets.cache import ScoreCache, model_key  # noqa: E402
from perceptlite.errors import ModelNotFoundError  # noqa: E402
from perceptlite.images.discover import iter_image_files  # noqa: E402
from perceptlite.package.registry import load_model  # noqa: E402
from perceptlite.records.files import write  # noqa: E402


def write_images(folder: Path, count: int, size: tuple[int, int] = (96, 72), per_folder: int = 1000) -> None:
    """`count` small JPEGs with different content, `per_folder` per subfolder."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    for index in range(count):
        sub = folder / f"batch{index // per_folder:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        pixels = np.roll(base, index, axis=1) // (1 + index % 3)
        Image.fromarray(pixels).save(sub / f"img{index:06d}.jpg", quality=85)


def timed_pass(scorer: Scorer, folder: Path, cache_path: Path) -> tuple[float, ScoreCache]:
    """Seconds to score the folder through the cache, writing JSONL to /dev/null (the model is loaded already)."""
    start = time.perf_counter()
    cache = ScoreCache(cache_path, model_key(scorer.package))
    with write(os.devnull, "jsonl") as writer:
        for result in scorer.score_many(iter_image_files([folder]), cache=cache):
            writer.write(result)
    cache.close()
    return time.perf_counter() - start, cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="Model package name or folder (default: bundled, else the stand-in).")
    parser.add_argument("--count", type=int, default=10_000, help="Number of images.")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="perceptlite-bench-cache-") as tmp:
        tmp_path = Path(tmp)
        try:
            package = load_model(args.model)
            label = package.name
        except ModelNotFoundError:
            from bench_score import stand_in_package

            package = load_model(stand_in_package(tmp_path / "stand-in"))
            label = "stand-in (no bundled model: student architecture, random weights)"
        folder = tmp_path / "images"
        write_images(folder, args.count)
        scorer = Scorer(package, device=args.device)
        cache_path = tmp_path / "scores.db"

        cold, cold_cache = timed_pass(scorer, folder, cache_path)
        warm, warm_cache = timed_pass(scorer, folder, cache_path)
        assert cold_cache.stored == args.count and warm_cache.hits == args.count, (cold_cache.stored, warm_cache.hits)

        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "perceptlite",
                "score",
                str(folder),
                "-m",
                str(package.path),
                "--cache",
                str(cache_path),
                "--jsonl",
                "-q",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            cwd=REPO,
        )
        cli_warm = time.perf_counter() - start

    print(f"model: {label}; {args.count} images of 96x72 JPEG; {os.cpu_count()} CPU cores")
    print(f"cold (empty cache):  {args.count / cold:10.1f} images/s  ({cold:.2f} s)")
    print(f"warm (all cached):   {args.count / warm:10.1f} images/s  ({warm:.2f} s)")
    print(f"warm / cold speed-up: {cold / warm:.1f}x  (target >= 20x)")
    print(f"warm CLI run in a fresh process, start-up included: {cli_warm:.2f} s ({args.count / cli_warm:.1f} images/s)")


if __name__ == "__main__":
    main()
