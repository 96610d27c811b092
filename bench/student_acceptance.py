"""Print every acceptance number of issue 3 for a distilled student package, on held-out images.

    python bench/student_acceptance.py --package models/perceptlite-base \\
        --labels artifacts/distill/labels.jsonl

Scores go through ONNX Runtime with the package's own files (fp32 and int8 when present). The
labels file provides the teacher labels; only images held out by export/student/splits.py are used
(clean and distorted; crop views are left out).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export.student.acceptance import format_report, measure  # noqa: E402
from perceptlite.package.manifest import ModelPackageError, load_package  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, default=Path("models/perceptlite-base"), help="model package folder")
    parser.add_argument("--labels", type=Path, nargs="+", required=True, help="teacher label JSONL file(s)")
    parser.add_argument("--ladder-images", type=int, default=12, help="held-out reference images per ladder")
    parser.add_argument("--limit", type=int, default=None, help="measure on only the first N held-out records")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    try:
        package = load_package(args.package)
    except ModelPackageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in args.labels:
        if not path.is_file():
            print(f"error: {path}: no such label file; run `python -m export.student.distill label` first", file=sys.stderr)
            return 2
    variants = package.variants
    fp32 = package.path / variants.get("fp32", next(iter(variants.values())))
    int8 = package.path / variants["int8"] if "int8" in variants else None
    result = measure(
        args.labels,
        fp32,
        int8,
        package.input.size[0],
        ladder_images=args.ladder_images,
        record_limit=args.limit,
        log=lambda m: print(m, file=sys.stderr),
    )
    onnx_diff = package.raw.get("fidelity", {}).get("onnx_vs_torch_max_abs")
    if onnx_diff is not None:
        result["onnx_vs_torch_max_abs"] = onnx_diff  # measured at export time against torch
    print(f"package: {package.path} (default variant {package.default_variant})")
    print(format_report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
