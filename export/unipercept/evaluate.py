"""SRCC / KRCC / PLCC of any scorer against Visual Rating files: the reference scorer or a model package.

    python -m export.unipercept.evaluate --reference CKPT VR.json [VR2.json ...] --images DIR [--axis iqa] [--bf16]
    python -m export.unipercept.evaluate --package PACKAGE VR.json --images DIR      # ONNX or GGUF, via perceptlite

Same table as `perceptlite eval` (perceptlite.datasets.evaluation; a package is scored through perceptlite's one Scorer),
so the numbers of the full model, its GGUF port and a distilled student can be put side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from perceptlite.datasets.evaluation import VrFileError, evaluate, format_table, scorer_scores
from perceptlite.records import AXES


def reference_score_function(checkpoint: Path, device: str, bf16: bool, axes: tuple[str, ...], trust_checkpoint_code: bool | None = None):
    """A paths -> {axis: score} function backed by the torch reference scorer (None for unreadable images)."""
    import torch

    from export.unipercept.reference import ReferenceScorer

    dtype = torch.bfloat16 if bf16 else torch.float32
    scorer = ReferenceScorer(checkpoint, device=device, dtype=dtype, trust_checkpoint_code=trust_checkpoint_code)

    def score(paths):
        for path in paths:
            try:
                yield scorer.rate(path, axes)
            except OSError as exc:  # missing or undecodable image: counted as failed in the table
                print(f"{path}: {exc}", file=sys.stderr)
                yield None

    return score


def package_score_function(package: str, device: str):
    """A paths -> {axis: score} function backed by a perceptlite model package."""
    from perceptlite import ScoreOptions, Scorer

    return scorer_scores(Scorer(package, ScoreOptions(device=device)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.unipercept.evaluate", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--reference", type=Path, help="UniPercept-layout checkpoint folder, scored with export.unipercept.reference")
    source.add_argument("--package", help="perceptlite model package (name or folder)")
    parser.add_argument("vr_files", nargs="+", type=Path, help="VR-format JSON files ({image, gt_score} records)")
    parser.add_argument("--images", type=Path, required=True, help="folder the VR files' image paths are relative to")
    parser.add_argument("--axis", action="append", choices=AXES, help="axis to correlate (repeat; default all three)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available for --reference, auto for --package)")
    parser.add_argument("--bf16", action="store_true", help="run the reference scorer in bfloat16, as UniPercept does")
    parser.add_argument("--json", action="store_true", help="print rows as JSON")
    parser.add_argument(
        "--trust-checkpoint-code",
        action="store_true",
        help="allow a --reference checkpoint with auto_map to run its own Python modelling code",
    )
    args = parser.parse_args(argv)
    axes = tuple(dict.fromkeys(args.axis)) if args.axis else AXES
    if not args.images.is_dir():
        print(f"error: {args.images}: not a folder; pass the images folder with --images", file=sys.stderr)
        return 2
    try:
        if args.reference is not None:
            import torch

            device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
            score = reference_score_function(args.reference, device, args.bf16, axes, args.trust_checkpoint_code or None)
            title = f"reference: {args.reference}"
        else:
            score = package_score_function(args.package, args.device or "auto")
            title = f"package: {args.package}"
        rows = evaluate(args.vr_files, args.images, axes, score)
    except (OSError, ValueError, VrFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps([r.as_dict() for r in rows], indent=2) if args.json else format_table(rows, title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
