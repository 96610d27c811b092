"""Label images with teachers into a resumable JSONL file (the format: export/distill/label.py).

    python -m export.distill.label_command --teacher nima --teacher iqa-synthetic --teacher ista \\
        --images ../shared/corpus --out artifacts/distill/labels.jsonl --distortions-per-image 4 --seed 0

Re-running the same command resumes: keys already in the file are skipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from export.common.errors import FactoryError
from export.common.images import DEFAULT_MAX_SIDE

from .label import iter_samples, label_samples


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m export.distill.label_command", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--teacher", action="append", required=True, help="teacher name (repeat): nima, iqa-synthetic, ista, unipercept:<folder>"
    )
    parser.add_argument("--images", nargs="+", required=True, type=Path, help="image folders (searched recursively) or files")
    parser.add_argument("--out", required=True, type=Path, help="labels JSONL; an existing file is resumed, never overwritten")
    parser.add_argument("--distortions-per-image", type=int, default=4, help="distorted copies per image besides the clean one")
    parser.add_argument("--views-per-image", type=int, default=0, help="clean crops (some mirrored) per image, labelled like the clean one")
    parser.add_argument("--seed", type=int, default=0, help="seed for the choice of distortion kinds, levels, noise and views")
    parser.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE, help="downscale images to this long side before anything else")
    parser.add_argument("--limit", type=int, default=None, help="stop after labelling this many new samples (the rest on the next run)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for network teachers")
    args = parser.parse_args(argv)

    for root in args.images:
        if not root.exists():
            print(f"error: {root} does not exist; pass an image folder or file to --images", file=sys.stderr)
            return 2
    try:
        import torch
    except ImportError:
        torch = None
    # Restored on return: `export.distill all` trains in the same process after labelling.
    threads_before = torch.get_num_threads() if torch else None
    if torch:
        torch.set_num_threads(args.threads)
    try:
        return _label(args)
    finally:
        if torch:
            torch.set_num_threads(threads_before)


def _label(args: argparse.Namespace) -> int:
    """Load the teachers and label every sample the arguments describe."""
    from export.teachers import load_teacher

    try:
        teachers = [load_teacher(name) for name in args.teacher]
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    samples = list(iter_samples(args.images, args.distortions_per_image, args.seed, views_per_image=args.views_per_image))
    try:
        counts = label_samples(samples, teachers, args.out, args.max_side, args.limit)
    except FactoryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"{args.out}: {counts['written']} new records, {counts['done_before']} already there, "
        f"{counts['failed']} failed, {len(samples)} samples in all",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
