"""Label images with teachers into a resumable JSONL file: clean images and graded distorted copies.

The command is export/distill/label_command.py. Every image is first downscaled so its long side is at most `max_side` (bicubic, antialiased), then
labelled clean, as `distortions_per_image` distorted copies (kind, level and seed chosen
deterministically from the seed and the file's relative path) and as `views_per_image` clean views
(a random crop, sometimes mirrored, also fixed by the seed and the path). Views give the teachers more
pictures to rate from the same files: the student sees how the aesthetic and texture scores move
with framing. Each sample gets every axis the teachers provide. One JSON record per line:

    {"key": ..., "root": "<images root as given>", "source": "<path relative to root>", "max_side": 512,
     "size": [w, h], "distortion": null | {"kind", "level", "seed"},
     ("view": {"box": [x0, y0, x1, y1] as fractions of the image, "flip": bool}, views only)
     "iaa": .., "iqa": .., "ista": .., "teachers": {"nima": {...}, "iqa-synthetic": {...}, ...}}

Re-running the same command skips every key already in the file (append-only, flushed per record,
a truncated last line from an interrupted run is dropped). `sample_image(record)` rebuilds the exact
image a record describes.
"""

from __future__ import annotations

import json
import os
import sys
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from export.common.distortions import HELDOUT_KINDS, LEVELS, TRAIN_KINDS, apply_distortion
from export.common.errors import FactoryError
from export.common.images import DEFAULT_MAX_SIDE, discover_images, load_image


@dataclass(frozen=True)
class Sample:
    """One image to label: a file (root + relative source), an optional distortion or clean view."""

    root: str
    source: str
    distortion: dict | None
    view: dict | None = None

    @property
    def key(self) -> str:
        """Stable identity used for resuming: root folder name + relative path + distortion or view."""
        name = f"{Path(self.root).name}/{self.source}"
        if self.view is not None:
            box = ",".join(f"{v:.4f}" for v in self.view["box"])
            return f"{name}|view|{box}|{'flip' if self.view['flip'] else 'noflip'}"
        if self.distortion is None:
            return f"{name}|clean"
        d = self.distortion
        return f"{name}|{d['kind']}|{d['level']}|{d['seed']}"

    @property
    def path(self) -> Path:
        return Path(self.root) / self.source


def choose_distortions(source: str, count: int, seed: int, kinds: tuple[str, ...]) -> list[dict]:
    """`count` distinct kinds with levels and seeds, fixed by (seed, source)."""
    rng = np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(source.encode())])
    picked = rng.choice(len(kinds), size=min(count, len(kinds)), replace=False)
    return [{"kind": kinds[i], "level": int(rng.choice(LEVELS)), "seed": int(rng.integers(0, 2**31 - 1))} for i in picked]


def choose_views(source: str, count: int, seed: int) -> list[dict]:
    """`count` crops covering 30-90 % of the image (aspect within 3:4..4:3 of it), half mirrored, fixed by (seed, source)."""
    rng = np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(source.encode()), 1])
    views = []
    for _ in range(count):
        area = rng.uniform(0.3, 0.9)
        stretch = float(np.exp(rng.uniform(np.log(0.75), np.log(4 / 3))))
        width, height = min(1.0, np.sqrt(area * stretch)), min(1.0, np.sqrt(area / stretch))
        left, top = rng.uniform(0.0, 1.0 - width), rng.uniform(0.0, 1.0 - height)
        box = [round(float(v), 4) for v in (left, top, left + width, top + height)]
        views.append({"box": box, "flip": bool(rng.random() < 0.5)})
    return views


def apply_view(image: Image.Image, view: dict) -> Image.Image:
    """Crop `image` to a view's fractional box (at least 1 pixel) and mirror it if the view says so."""
    x0, y0, x1, y1 = view["box"]
    left, top = int(round(x0 * image.width)), int(round(y0 * image.height))
    right = max(left + 1, int(round(x1 * image.width)))
    bottom = max(top + 1, int(round(y1 * image.height)))
    cropped = image.crop((left, top, min(right, image.width), min(bottom, image.height)))
    return cropped.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if view["flip"] else cropped


def iter_samples(
    roots: Iterable[str | Path],
    distortions_per_image: int = 4,
    seed: int = 0,
    kinds: tuple[str, ...] = TRAIN_KINDS + HELDOUT_KINDS,
    views_per_image: int = 0,
) -> Iterator[Sample]:
    """Every sample the labeller produces, in order: per image the clean one, its distorted copies, its views."""
    for root in roots:
        root_path = Path(root)
        base = root_path.parent if root_path.is_file() else root_path
        for path in discover_images(root_path):
            source = path.relative_to(base).as_posix()
            yield Sample(str(base), source, None)
            for distortion in choose_distortions(source, distortions_per_image, seed, kinds):
                yield Sample(str(base), source, distortion)
            for view in choose_views(source, views_per_image, seed):
                yield Sample(str(base), source, None, view)


def sample_image(record: dict, root: str | Path | None = None) -> Image.Image:
    """Rebuild the exact (possibly distorted) image of a label record; `root` overrides record["root"]."""
    path = Path(root if root is not None else record["root"]) / record["source"]
    clean = load_image(path, record.get("max_side", DEFAULT_MAX_SIDE))
    return render_sample(clean, record.get("distortion"), record.get("view"))[0]


def render_sample(clean: Image.Image, distortion: dict | None, view: dict | None) -> tuple[Image.Image, Image.Image | None]:
    """The image a sample describes, made from its clean image, and the reference a teacher compares
    it with: the clean image for a distortion, none for the clean image itself or a view."""
    if view:
        return apply_view(clean, view), None
    if not distortion:
        return clean, None
    image = apply_distortion(clean, distortion["kind"], int(distortion["level"]), int(distortion["seed"]))
    return image, clean


def read_records(paths: str | Path | Iterable[str | Path], missing_ok: bool = False) -> list[dict]:
    """All complete records of one labels file or several, in file order; blank lines and half-written
    records (an interrupted run) are skipped. A missing file is an error unless `missing_ok`."""
    records = []
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        if missing_ok and not Path(path).is_file():
            continue
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return records


def _drop_partial_last_line(path: Path) -> None:
    """An interrupted run can leave half a record at the end; cut it so appends start on a fresh line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return
        block = min(size, 1 << 20)
        f.seek(size - block)
        tail = f.read(block)
        cut = tail.rfind(b"\n")
        f.truncate(size - block + cut + 1 if cut >= 0 else 0)


def _teacher_axes(teachers) -> dict[str, str]:
    owner = {}
    for teacher in teachers:
        for axis in teacher.axes:
            if axis in owner:
                raise FactoryError(f"axis {axis} is provided by both {owner[axis]} and {teacher.name}; pass only one")
            owner[axis] = teacher.name
    return owner


def label_samples(samples: list[Sample], teachers, out: Path, max_side: int, limit: int | None = None) -> dict:
    """Label every sample not yet in `out`, appending one record per line; returns counts."""
    from tqdm import tqdm

    out.parent.mkdir(parents=True, exist_ok=True)
    _drop_partial_last_line(out)
    done = {r.get("key") for r in read_records(out, missing_ok=True)}
    todo = [s for s in samples if s.key not in done]
    counts = {"done_before": len(samples) - len(todo), "written": 0, "failed": 0}
    if limit is not None:
        todo = todo[:limit]
    axes = _teacher_axes(teachers)
    bad_sources: set[str] = set()
    clean_cache: tuple[str, Image.Image] | None = None
    with open(out, "a", encoding="utf-8") as f, tqdm(todo, desc="labelling", unit="img", file=sys.stderr) as bar:
        for sample in bar:
            if sample.source in bad_sources:
                counts["failed"] += 1
                continue
            try:
                if clean_cache is None or clean_cache[0] != str(sample.path):
                    clean_cache = (str(sample.path), load_image(sample.path, max_side))
                image, reference = render_sample(clean_cache[1], sample.distortion, sample.view)
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                bar.write(f"warning: skipping {sample.path}: cannot read image ({exc})", file=sys.stderr)
                bad_sources.add(sample.source)
                counts["failed"] += 1
                continue
            record = {
                "key": sample.key,
                "root": sample.root,
                "source": sample.source,
                "max_side": max_side,
                "size": list(image.size),
                "distortion": sample.distortion,
            }
            if sample.view is not None:
                record["view"] = sample.view
            details = {}
            for teacher in teachers:
                result = teacher.label(image, reference)
                details[teacher.name] = {k: round(float(v), 5) for k, v in result.items()}
            for axis, teacher_name in axes.items():
                record[axis] = round(float(details[teacher_name][axis]), 4)
            record["teachers"] = details
            f.write(json.dumps(record) + "\n")
            f.flush()
            counts["written"] += 1
    return counts
