"""Peak memory of `perceptlite score` on big images and big batches (issue 12, class 6).

    python bench/bench_memory.py                 # 13,000 x 13,000 WebP/PNG/JPEG, one and four at once
    python bench/bench_memory.py --size 8000 --model ./my-package

Each case runs the real CLI in a subprocess (default jobs, the bundled model unless --model) and
prints the child's peak resident memory (``ru_maxrss`` from ``wait4``), its wall time, and how
many files were scored or refused. The images are generated once into a temporary folder (a big
WebP takes a while to encode).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]


def make_big(folder: Path, size: int) -> dict[str, Path]:
    """The big test images, made in a child process: a child's ru_maxrss starts from its parent's
    peak (Linux keeps it across exec), so the parent must never hold a big picture itself."""
    code = f"import sys; sys.path.insert(0, {str(REPO / 'bench')!r}); import bench_memory as b; b.save_big({str(folder)!r}, {size})"
    subprocess.run([sys.executable, "-c", code], check=True)
    return {kind: folder / f"big.{kind}" for kind in ("webp", "png", "jpg")}


def save_big(folder: str, size: int) -> None:
    """One flat-ish big picture (small files, as in the red-team report), saved as WebP, PNG and JPEG."""
    folder = Path(folder)
    picture = Image.new("RGB", (size, size), (90, 140, 200))
    draw = ImageDraw.Draw(picture)
    for offset in range(0, size, max(1, size // 26)):
        draw.ellipse((offset, offset // 2, offset + size // 6, offset // 2 + size // 8), fill=(offset % 255, 80, 160))
    for kind, options in (("webp", {"quality": 80}), ("png", {"compress_level": 1}), ("jpg", {"quality": 85})):
        picture.save(folder / f"big.{kind}", **options)


def copies(path: Path, folder: Path, count: int) -> Path:
    """A folder with `count` hard links to `path`."""
    folder.mkdir(exist_ok=True)
    for index in range(count):
        target = folder / f"{index}{path.suffix}"
        if not target.exists():
            os.link(path, target)
    return folder


def small_images(folder: Path, count: int) -> Path:
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{index:05d}.png")
    return folder


def photos_2mp(folder: Path, count: int) -> Path:
    """`count` 1600 x 1200 JPEGs (hard links to four noisy pictures): full decodes for a crops model."""
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    sources = []
    for index in range(4):
        base = Image.fromarray(rng.integers(0, 256, (75, 100, 3), dtype=np.uint8)).resize((1600, 1200), Image.Resampling.BICUBIC)
        noisy = np.clip(np.asarray(base, dtype=np.int16) + rng.integers(-20, 20, (1200, 1600, 3)), 0, 255).astype(np.uint8)
        sources.append(folder / f"source{index}.jpeg")
        Image.fromarray(noisy).save(sources[-1], quality=90)
    for index in range(count):
        os.link(sources[index % 4], folder / f"{index:05d}.jpg")
    for source in sources:
        source.unlink()
    return folder


def run(args: list[str]) -> dict:
    """Run the CLI; its peak RSS in MB, seconds, and how many records scored / failed."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "perceptlite", "score", "--jsonl", "-q", *args], env=env, stdout=out, stderr=err)
        _, _, usage = os.wait4(process.pid, 0)  # this child's own peak, not the max over all children
        process.returncode = 0  # reaped above
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        records = [json.loads(line) for line in out.read().decode().splitlines() if line.strip()]
        stderr = err.read().decode().strip()
    return {
        "peak_mb": round(usage.ru_maxrss / 1024),
        "seconds": round(seconds, 1),
        "scored": sum(1 for r in records if r["error"] is None),
        "refused": sum(1 for r in records if r["error"] is not None),
        "stderr": stderr[:160],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=13000, help="side of the big square images")
    parser.add_argument("--model", default=None, help="model package (default: the bundled one)")
    parser.add_argument("--extra", default="", help='more CLI options for every run, e.g. --extra="--decode-memory 4096"')
    args = parser.parse_args()
    model = ["-m", args.model] if args.model else []
    with tempfile.TemporaryDirectory(prefix="perceptlite-mem-") as temp:
        folder = Path(temp)
        big = make_big(folder, args.size)
        print(f"{args.size}x{args.size}: " + ", ".join(f"{k} {p.stat().st_size // 1024} KB" for k, p in big.items()))
        cases = []
        for kind, path in big.items():
            cases.append((f"one {kind}", [str(path)]))
            cases.append((f"four {kind}", [str(copies(path, folder / f"four-{kind}", 4))]))
        cases.append(("1000 small, --batch-size 1000", [str(small_images(folder / "small", 1000)), "--batch-size", "1000"]))
        photos = str(photos_2mp(folder / "photos", 240))
        cases.append(("240 2-MP, --batch-size 1000", [photos, "--batch-size", "1000"]))
        cases.append(("240 2-MP, --batch-size 1000, 4 GB", [photos, "--batch-size", "1000", "--decode-memory", "4096"]))
        for name, case in cases:
            result = run(model + case + shlex.split(args.extra))
            print(
                f"{name:32s} peak {result['peak_mb']:6d} MB  {result['seconds']:6.1f} s  scored {result['scored']}, refused {result['refused']}"
                + (f"  [{result['stderr']}]" if result["stderr"] else "")
            )


if __name__ == "__main__":
    main()
