"""GGUF backend numbers: prefix reuse, Q4_K_M/Q8_0/F16 parity, and an 8B CPU estimate.

    python bench/bench_gguf.py [--checkpoint DIR | --package DIR --checkpoint DIR] [--images 8]

Without --checkpoint it builds the image-sensitive tiny checkpoint (export.unipercept.tiny, ~2 min) and
converts it (export.unipercept.gguf, ~1 min). Prints:
1. time of three ratings (iaa, iqa, ista) of one image versus one rating (target <= 1.4x: the
   system + image prefix is evaluated once and reused from the KV cache);
2. parity with the torch reference scorer per variant (max/mean |difference| in points, SRCC per
   axis) -- Q4_K_M has no threshold, F16/Q8_0 are asserted in tests/test_gguf_parity.py;
3. an estimate of memory and time per image for the real 8B UniPercept on CPU (see docs/gguf.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perceptlite.backends.gguf import GgufBackend  # noqa: E402
from perceptlite.package.manifest import AXES, load_package  # noqa: E402

CORPUS = REPO.parent / "shared" / "corpus"
GIB = 2**30

# The real model (InternVL3-8B layout): Qwen2.5-7B text model + InternViT-300M + projector.
REAL_LLM_PARAMS = 7.62e9
REAL_VIT_PARAMS = 0.30e9
REAL_IMAGE_PATCHES = 1025  # 32 x 32 patches + CLS, one 448x448 tile
REAL_LLM_LAYERS, REAL_KV_HEADS, REAL_HEAD_DIM = 28, 4, 128
REAL_GGUF_GIB = {"f16": 15.2, "q8_0": 8.1, "q4_k_m": 4.7}  # text model files, typical for 7.6B
REAL_MMPROJ_GIB = 0.65  # F16
# Prompt-processing throughput of llama.cpp on CPU for a 7-8B model, tokens/s, by (variant, CPU class).
# Assumptions, not measurements: AVX2 laptop with 8 performance cores / AVX-512 desktop with 16 cores.
ASSUMED_PP_TOKENS_PER_S = {
    "q4_k_m": {"8-core laptop": 60.0, "16-core desktop": 150.0},
    "q8_0": {"8-core laptop": 50.0, "16-core desktop": 130.0},
    "f16": {"8-core laptop": 25.0, "16-core desktop": 70.0},
}


def parity_images(count: int) -> list:
    from PIL import Image

    paths = sorted((CORPUS / "imagenet-sample").glob("*.JPEG"))[::97][: count // 2]
    paths += sorted((CORPUS / "bsds500" / "val").glob("*.jpg"))[::17][: count - len(paths)]
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return images


def prepare_checkpoint(args: argparse.Namespace, workdir: Path) -> tuple[Path, Path]:
    from export.unipercept import gguf as gguf_export
    from export.unipercept import tiny

    checkpoint = args.checkpoint
    if checkpoint is None:
        print("building the image-sensitive tiny checkpoint (export.unipercept.tiny) ...", file=sys.stderr)
        checkpoint = tiny.make_image_sensitive_checkpoint(workdir / "unipercept-tiny")
    package = args.package
    if package is None:
        print("converting it to GGUF (export.unipercept.gguf) ...", file=sys.stderr)
        package = workdir / "unipercept-tiny-gguf"
        if gguf_export.main([str(checkpoint), str(package), "--threads", str(args.threads)]) != 0:
            raise SystemExit(1)
    return Path(checkpoint), Path(package)


def time_prefix_reuse(backend: GgufBackend, images: list, repeats: int) -> tuple[float, float]:
    """Fastest seconds (least disturbed by other processes) for one and for three ratings of an image."""
    one, three = [], []
    prepared = [backend.prepare(image) for image in images]
    backend.rate(prepared[0])  # warm-up
    for _ in range(repeats):
        for pixels in prepared:
            start = time.perf_counter()
            backend.rate(pixels, axes=["iqa"])
            one.append(time.perf_counter() - start)
            start = time.perf_counter()
            backend.rate(pixels)
            three.append(time.perf_counter() - start)
    return min(one), min(three)


def parity(backend: GgufBackend, images: list, reference: list[dict[str, float]]) -> dict[str, float]:
    from scipy.stats import spearmanr

    ours = [backend.rate(backend.prepare(image)) for image in images]
    diffs = [abs(o[a] - r[a]) for o, r in zip(ours, reference) for a in AXES]
    result = {"max_abs": max(diffs), "mean_abs": sum(diffs) / len(diffs)}
    for axis in AXES:
        result[f"srcc_{axis}"] = float(spearmanr([o[axis] for o in ours], [r[axis] for r in reference]).statistic)
    return result


def estimate_8b(prefix_tokens: int, question_tokens: int) -> str:
    """Memory and time per image for the real 8B model on CPU, from GGUF sizes and token counts."""
    kv_bytes_per_token = REAL_LLM_LAYERS * 2 * REAL_KV_HEADS * REAL_HEAD_DIM * 2  # K and V, f16
    context = 2048
    kv_gib = kv_bytes_per_token * context / GIB
    compute_gib = 0.5  # llama.cpp compute buffers (ubatch 512) + ViT attention over 1025 patches
    shared = prefix_tokens
    evaluated_with_reuse = shared + 3 * question_tokens
    evaluated_without = 3 * (shared + question_tokens)
    vit_equivalent = REAL_IMAGE_PATCHES * REAL_VIT_PARAMS / REAL_LLM_PARAMS  # ViT work in LLM-token units
    lines = [
        "Real UniPercept-8B on CPU (estimate; see docs/gguf.md):",
        f"  tokens per image: prefix {shared} (system + 256 image tokens + tags), each rating question "
        f"{question_tokens}; evaluated with prefix reuse {evaluated_with_reuse} vs {evaluated_without} without "
        f"({evaluated_without / evaluated_with_reuse:.2f}x less work); the ViT adds ~{vit_equivalent:.0f} token-equivalents",
        f"  KV cache {kv_gib * 1024:.0f} MiB at {context} tokens; compute buffers ~{compute_gib:.1f} GiB; mmproj {REAL_MMPROJ_GIB} GiB",
    ]
    for variant, size in REAL_GGUF_GIB.items():
        memory = size + REAL_MMPROJ_GIB + kv_gib + compute_gib
        times = ", ".join(
            f"{cpu}: ~{(evaluated_with_reuse + vit_equivalent) / speed:.0f} s" for cpu, speed in ASSUMED_PP_TOKENS_PER_S[variant].items()
        )
        lines.append(f"  {variant:7s} file {size:4.1f} GiB -> resident ~{memory:4.1f} GiB; per image (3 axes) {times}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="tiny (or any) UniPercept checkpoint folder; default: build one")
    parser.add_argument("--package", type=Path, default=None, help="its gguf package; default: convert the checkpoint")
    parser.add_argument("--images", type=int, default=8, help="number of corpus photos for parity and timing")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats per image")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp / torch threads")
    args = parser.parse_args(argv)

    import torch

    from export.unipercept.reference import ReferenceScorer

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-gguf-") as tmp:
        checkpoint, package_dir = prepare_checkpoint(args, Path(tmp))
        package = load_package(package_dir)
        images = parity_images(args.images)
        reference = ReferenceScorer(checkpoint)
        reference_scores = [reference.rate(image) for image in images]

        print(f"package {package_dir.name}; {len(images)} corpus photos; {args.threads} threads")
        for variant in ("f16", "q8_0", "q4_k_m"):
            with GgufBackend(package, device="cpu", threads=args.threads, variant=variant) as backend:
                numbers = parity(backend, images, reference_scores)
                srcc = " ".join(f"{a}={numbers[f'srcc_{a}']:.3f}" for a in AXES)
                print(f"parity {variant:7s} max |diff| {numbers['max_abs']:.3f}  mean |diff| {numbers['mean_abs']:.3f}  SRCC {srcc}")
                if variant == "q8_0":
                    one, three = time_prefix_reuse(backend, images[:4], args.repeats)
                    prefix = backend._eval_image_prefix(backend.prepare(images[0]))
                    question = max(len(tokens) for tokens in backend._rating_suffixes.values())
        print(f"timing q8_0: one rating {one * 1000:.0f} ms, three ratings {three * 1000:.0f} ms -> {three / one:.2f}x (target <= 1.4x)")
        print(estimate_8b(prefix, question))
    return 0


if __name__ == "__main__":
    sys.exit(main())
