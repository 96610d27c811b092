"""Benchmark `perceptlite score`: decode-only floor vs end-to-end, model-only rate, a torch NIMA peer,
peak RSS, flatness, cold start.

    python bench/bench_score.py                      # 500 JPEGs of ~2 MP, the bundled default model
    python bench/bench_score.py --model FOLDER --count 200 --flatness

Builds a temporary folder of N JPEGs (photos from ../shared/corpus upscaled to the asked size, or
synthetic ones), then prints in one run: decode-only images/s (the same full decode the scorer does,
with the same number of worker threads: the floor), end-to-end images/s of the real `perceptlite
score` command in a fresh process, their ratio, the model-only rate (prepared inputs, inference
alone), its peak RSS, the model file size, a torch NIMA (MobileNet-v1, 224 px, batch 16, 2 threads,
decode + resize + inference: what a user would otherwise run; needs the `export` extra),
optionally the RSS at 1,000 vs 10,000 files (hard links, no extra disk), and the cold-start wall
time of scoring one image.
Without the bundled default model it uses a stand-in: an ONNX graph with the student's architecture
and cost (EfficientNet-Lite0 at 320x320, random weights), and says so.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perceptlite.images.decode import decode_file  # noqa: E402
from perceptlite.pipeline import default_jobs  # noqa: E402

CORPUS = REPO.parent / "shared" / "corpus"


def build_photos(folder: Path, count: int, megapixels: float) -> list[Path]:
    """Write `count` JPEGs of about `megapixels`, 4:3, from corpus photos (synthetic if absent)."""
    folder.mkdir(parents=True, exist_ok=True)
    width = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    height = int(round(width * 3 / 4))
    sources = sorted(CORPUS.rglob("*.[jJ][pP]*[gG]"))[:200] if CORPUS.is_dir() else []
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"photo_{i:05d}.jpg"
        if sources:
            with Image.open(sources[i % len(sources)]) as photo:
                image = photo.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
        else:
            image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        image.save(path, quality=90)
        paths.append(path)
    return paths


def stand_in_package(folder: Path, size: int = 320) -> Path:
    """An ONNX package with EfficientNet-Lite0's layers and cost at `size` (random weights)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from perceptlite.package.manifest import write_package

    rng = np.random.default_rng(0)
    nodes, inits = [], []
    counter = [0]

    def conv(x, cin, cout, kernel, stride=1, groups=1, relu6=True):
        counter[0] += 1
        n = counter[0]
        fan_in = cin // groups * kernel * kernel
        weight = rng.normal(0, (2.0 / fan_in) ** 0.5, (cout, cin // groups, kernel, kernel)).astype(np.float32)
        inits.extend([numpy_helper.from_array(weight, f"w{n}"), numpy_helper.from_array(np.zeros(cout, np.float32), f"b{n}")])
        nodes.append(
            helper.make_node(
                "Conv",
                [x, f"w{n}", f"b{n}"],
                [f"c{n}"],
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                pads=[kernel // 2] * 4,
                group=groups,
            )
        )
        if not relu6:
            return f"c{n}"
        nodes.append(helper.make_node("Clip", [f"c{n}", "zero", "six"], [f"r{n}"]))
        return f"r{n}"

    inits += [numpy_helper.from_array(np.array(0, np.float32), "zero"), numpy_helper.from_array(np.array(6, np.float32), "six")]
    stages = (
        (1, 3, 1, 1, 32, 16),
        (2, 3, 2, 6, 16, 24),
        (2, 5, 2, 6, 24, 40),
        (3, 3, 2, 6, 40, 80),
        (3, 5, 1, 6, 80, 112),
        (4, 5, 2, 6, 112, 192),
        (1, 3, 1, 6, 192, 320),
    )
    x = conv("pixels", 3, 32, 3, 2)
    for repeats, kernel, stride, expand, cin, cout in stages:
        for i in range(repeats):
            c_in, s = (cin, stride) if i == 0 else (cout, 1)
            y = conv(x, c_in, c_in * expand, 1) if expand != 1 else x
            y = conv(y, c_in * expand, c_in * expand, kernel, s, groups=c_in * expand)
            y = conv(y, c_in * expand, cout, 1, relu6=False)
            if s == 1 and c_in == cout:
                nodes.append(helper.make_node("Add", [y, x], [f"{y}_res"]))
                y = f"{y}_res"
            x = y
    x = conv(x, 320, 1280, 1)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["features"]))
    inits.append(numpy_helper.from_array(rng.normal(0, 0.03, (1280, 3)).astype(np.float32), "head"))
    nodes.append(helper.make_node("MatMul", ["features", "head"], ["logits"]))
    nodes.append(helper.make_node("Sigmoid", ["logits"], ["scores"]))
    graph = helper.make_graph(
        nodes,
        "stand_in",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "model.onnx")
    manifest = {
        "name": "stand-in",
        "version": "0",
        "backend": "onnx",
        "description": "benchmark stand-in (random weights)",
        "files": ["model.onnx"],
        "variants": {"fp32": "model.onnx"},
        "default_variant": "fp32",
        "input": {
            "size": [size, size],
            "resize": "stretch",
            "interpolation": "bicubic",
            "mean": [0.5] * 3,
            "std": [0.5] * 3,
            "draft_factor": 2.0,
        },
        "outputs": {
            a: {"tensor": "scores", "index": i, "calibration": {"scale": 100.0, "offset": 0.0}}
            for i, a in enumerate(("iaa", "iqa", "ista"))
        },
        "provenance": {"teacher": "none"},
        "fidelity": {},
    }
    write_package(folder, manifest, "# stand-in\n\nRandom weights with the student's cost; for benchmarks only.\n")
    return folder


def decode_rate(paths: list[Path], jobs: int) -> float:
    """Images/s of the full decode (open, EXIF, RGB) alone, with `jobs` threads."""
    start = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        for _ in pool.map(decode_file, paths):
            pass
    return len(paths) / (time.perf_counter() - start)


def run_score(folder: Path, model: str, extra: list[str] = ()) -> tuple[float, float]:
    """Run `perceptlite score` in a fresh process: (wall seconds, peak RSS in MB)."""
    command = [sys.executable, "-m", "perceptlite", "score", str(folder), "--model", model, "--jsonl", "--quiet", *extra]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        sys.exit(f"perceptlite score failed ({code}): {process.stderr.read().decode(errors='replace')}")
    return wall, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def model_only_rate(paths: list[Path], model: str, threads: int | None = None) -> float:
    """Images/s of inference alone on inputs prepared beforehand, run as the scorer runs them:
    batches of the backend's size, `backend.parallel_runs` of them at once."""
    from perceptlite import Scorer
    from perceptlite.images.decode import decode_file as decode

    scorer = Scorer(model, device="cpu", threads=threads)
    backend = scorer.backend
    prepared = [backend.prepare(decode(p).image) for p in paths]
    batches = [prepared[i : i + scorer.batch_size] for i in range(0, len(prepared), scorer.batch_size)]
    with ThreadPoolExecutor(max_workers=backend.parallel_runs) as pool:
        list(pool.map(backend.infer, batches[: backend.parallel_runs]))  # warm-up
        start = time.perf_counter()
        list(pool.map(backend.infer, batches))
        return len(prepared) / (time.perf_counter() - start)


def nima_rate(paths: list[Path], batch: int = 16, threads: int = 2) -> float | None:
    """Images/s of a torch NIMA end to end (PIL decode, 224-px resize, batch 16); None without torch."""
    try:
        import torch

        from export.teachers.nima import load_nima, preprocess
    except ImportError:
        return None
    torch.set_num_threads(threads)
    model = load_nima()
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(paths), batch):
            images = []
            for path in paths[i : i + batch]:
                with Image.open(path) as image:
                    images.append(preprocess(image.convert("RGB")))
            model(torch.stack(images))
    return len(paths) / (time.perf_counter() - start)


def model_file_mb(model: str) -> str:
    from perceptlite.package.registry import load_model

    package = load_model(model)
    chosen = package.variant_file(None)
    return f"{chosen.stat().st_size / 1e6:.1f} MB ({chosen.name}, the default variant)"


def link_copies(paths: list[Path], folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        os.link(paths[i % len(paths)], folder / f"p{i:06d}.jpg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="Model name or package folder (default: perceptlite-base, else a stand-in).")
    parser.add_argument("--folder", type=Path, help="Use the JPEGs in this folder instead of building them.")
    parser.add_argument("--count", type=int, default=500, help="Number of photos to build (default 500).")
    parser.add_argument("--megapixels", type=float, default=2.0, help="Size of the built photos (default 2.0).")
    parser.add_argument("--jobs", type=int, default=None, help="Decode workers for both measurements (default: perceptlite's).")
    parser.add_argument("--flatness", action="store_true", help="Also compare peak RSS at 1,000 and 10,000 files (hard links).")
    args = parser.parse_args()
    jobs = args.jobs or default_jobs()

    with tempfile.TemporaryDirectory(prefix="perceptlite-bench-") as tmp:
        tmp_path = Path(tmp)
        model, label = args.model, args.model
        if model is None:
            from perceptlite.errors import ModelNotFoundError
            from perceptlite.package.registry import DEFAULT_MODEL, resolve_model

            try:
                model, label = str(resolve_model(DEFAULT_MODEL)), DEFAULT_MODEL
            except ModelNotFoundError:
                model = str(stand_in_package(tmp_path / "stand-in"))
                label = "STAND-IN (EfficientNet-Lite0 layers at 320x320, random weights; bundled default not installed)"
        if args.folder:
            paths = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
            folder = args.folder
        else:
            print(f"building {args.count} JPEGs of ~{args.megapixels} MP ...", file=sys.stderr)
            folder = tmp_path / "photos"
            paths = build_photos(folder, args.count, args.megapixels)
        with Image.open(paths[0]) as first:
            size = first.size
        extra = ["--jobs", str(jobs)]

        decode_rate(paths[: min(20, len(paths))], jobs)  # warm the page cache
        decode = decode_rate(paths, jobs)
        decode_single = decode_rate(paths[: min(100, len(paths))], 1)
        wall, rss = run_score(folder, model, extra)
        end_to_end = len(paths) / wall
        model_only = model_only_rate(paths[: min(100, len(paths))], model)
        nima = nima_rate(paths)
        colds = []
        for _ in range(3):
            colds.append(run_score(paths[0], model, extra)[0])

        print(f"model:                    {label}")
        print(
            f"photos:                   {len(paths)} JPEGs of {size[0]}x{size[1]} ({size[0] * size[1] / 1e6:.1f} MP), {os.cpu_count()} CPU cores, {jobs} decode workers"
        )
        print(f"decode-only:              {decode:.1f} images/s ({decode_single:.1f} images/s on one thread)")
        cold = statistics.median(colds)
        steady = len(paths) / max(wall - cold, 1e-9)
        print(f"end-to-end score:         {end_to_end:.1f} images/s (wall {wall:.1f} s, process start included)")
        print(f"end-to-end, steady:       {steady:.1f} images/s (wall minus the one-image cold start: what NIMA's rate also leaves out)")
        print(f"model only:               {model_only:.1f} images/s (inputs prepared beforehand)")
        print(f"ratio end-to-end/decode:  {end_to_end / decode:.2f} (target >= 0.15)")
        if nima is None:
            print("torch NIMA peer:          skipped (needs torch and the export extra)")
        else:
            print(
                f"torch NIMA peer:          {nima:.1f} images/s end to end (MobileNet-v1 224 px, batch 16, 2 threads); perceptlite is {end_to_end / nima:.2f}x, steady {steady / nima:.2f}x (target >= 1)"
            )
        print(f"model file:               {model_file_mb(model)} (target <= 20 MB)")
        print(f"peak RSS:                 {rss:.0f} MB (target <= 300)")
        print(f"cold start, one image:    {cold:.2f} s (median of 3 fresh processes; target <= 1.0)")
        if args.flatness:
            rss_by_count = {}
            for count in (1_000, 10_000):
                many = tmp_path / f"links{count}"
                link_copies(paths, many, count)
                wall_many, rss_by_count[count] = run_score(many, model, extra)
                print(f"peak RSS at {count:>6} files: {rss_by_count[count]:.0f} MB ({count / wall_many:.1f} images/s)")
            growth = rss_by_count[10_000] / rss_by_count[1_000] - 1
            print(f"RSS growth 1k -> 10k:     {growth * 100:+.1f} % (target within 20 %)")


if __name__ == "__main__":
    main()
