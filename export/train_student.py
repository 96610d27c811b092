"""Train the student's heads on teacher labels.

The labelled images are deterministic (a clean source image, or one regenerated exactly from its
distortion record), so the frozen backbone's multi-scale features are computed once per record and
cached in chunk files; training the three heads then takes seconds per epoch on a CPU. Held-out
images (``export.splits``) are never trained on.
"""

from __future__ import annotations

import hashlib
import json
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from .splits import is_heldout
from .student import AXES, FEATURE_DIM, Student, build_student

INPUT_MEAN = (0.5, 0.5, 0.5)  # EfficientNet-Lite's own normalisation (measured: 85 % vs 70 % top-1)
INPUT_STD = (0.5, 0.5, 0.5)
DEFAULT_SIZE = 224
CHUNK = 256


def seed_everything(seed: int) -> None:
    """Fix Python, numpy and torch seeds."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def preprocess(image: Image.Image, size: int) -> np.ndarray:
    """RGB image -> normalised float32 CHW array, stretched to size x size with bicubic resampling."""
    image = image.convert("RGB").resize((size, size), Image.BICUBIC)
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    pixels = (pixels - np.array(INPUT_MEAN, np.float32)) / np.array(INPUT_STD, np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def read_records(paths: Iterable[str | Path]) -> list[dict]:
    """All label records of one or more JSONL files, in file order (blank lines skipped)."""
    records = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    records.append(json.loads(line))
    return records


def training_records(records: Iterable[dict]) -> list[dict]:
    """Records the student may learn from: not a held-out image, not a held-out distortion kind."""
    from .distortions import HELDOUT_KINDS

    return [
        r
        for r in records
        if not is_heldout(r["source"]) and (r.get("distortion") or {}).get("kind") not in HELDOUT_KINDS
    ]


def record_image(record: dict) -> Image.Image:
    """The exact image a label record describes (clean or regenerated distortion)."""
    from .label import sample_image

    return sample_image(record)


def record_key(record: dict) -> str:
    """Identity of a record's image: its file, size limit and distortion, not its labels."""
    path = (Path(record.get("root") or ".") / record["source"]).resolve()
    return json.dumps([str(path), record.get("max_side"), record.get("distortion")], sort_keys=True)


def targets_of(records: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Label matrix [N, 3] on 0-100 and a mask of which labels exist."""
    values = np.zeros((len(records), len(AXES)), np.float32)
    mask = np.zeros((len(records), len(AXES)), np.float32)
    for row, record in enumerate(records):
        for col, axis in enumerate(AXES):
            value = record.get(axis)
            if value is not None:
                values[row, col] = float(value)
                mask[row, col] = 1.0
    return values, mask


def _cached_rows(cache_dir: Path, size: int) -> dict[str, tuple[Path, int]]:
    """record key -> (chunk file, row) for every feature row already cached at this size."""
    rows = {}
    for keys_file in sorted(cache_dir.glob(f"size{size}-dim{FEATURE_DIM}-*.keys.json")):
        array_file = keys_file.with_name(keys_file.name.replace(".keys.json", ".npy"))
        if array_file.is_file():
            for row, key in enumerate(json.loads(keys_file.read_text(encoding="utf-8"))):
                rows[key] = (array_file, row)
    return rows


def _save_chunk(cache_dir: Path, size: int, keys: list[str], block: np.ndarray) -> None:
    name = f"size{size}-dim{FEATURE_DIM}-" + hashlib.sha256("\n".join(keys).encode()).hexdigest()[:20]
    np.save(cache_dir / f"{name}.npy", block)
    # The keys file is written last: a chunk counts as cached only once both files exist.
    (cache_dir / f"{name}.keys.json").write_text(json.dumps(keys), encoding="utf-8")


@torch.no_grad()
def extract_features(
    student: Student, records: Sequence[dict], size: int, cache_dir: Path | None = None, batch: int = 16
) -> np.ndarray:
    """Backbone features [N, FEATURE_DIM] for every record; rows are cached per record key."""
    student.eval()
    keys = [record_key(r) for r in records]
    out = np.zeros((len(records), FEATURE_DIM), np.float32)
    cached = {}
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        cached = _cached_rows(cache_dir, size)
    loaded: dict[Path, np.ndarray] = {}
    missing = []
    for index, key in enumerate(keys):
        if key in cached:
            array_file, row = cached[key]
            if array_file not in loaded:
                loaded[array_file] = np.load(array_file)
            out[index] = loaded[array_file][row]
        else:
            missing.append(index)
    with ThreadPoolExecutor(max_workers=2) as pool, tqdm(total=len(missing), desc="features", unit="img") as bar:
        for start in range(0, len(missing), CHUNK):
            chunk = missing[start : start + CHUNK]
            arrays = pool.map(lambda i: preprocess(record_image(records[i]), size), chunk)
            feats, pending = [], []
            for array in arrays:
                pending.append(array)
                if len(pending) == batch:
                    feats.append(student.features(torch.from_numpy(np.stack(pending))).numpy())
                    bar.update(len(pending))
                    pending = []
            if pending:
                feats.append(student.features(torch.from_numpy(np.stack(pending))).numpy())
                bar.update(len(pending))
            block = np.concatenate(feats)
            out[chunk] = block
            if cache_dir is not None:
                _save_chunk(cache_dir, size, [keys[i] for i in chunk], block)
    return out


def fit_heads(
    student: Student,
    features: np.ndarray,
    targets: np.ndarray,
    mask: np.ndarray,
    epochs: int = 60,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 5e-2,
    max_steps: int | None = None,
    seed: int = 0,
) -> list[float]:
    """Train the heads (backbone frozen) with a masked MSE on 0-1 targets; returns per-epoch losses."""
    seed_everything(seed)
    heads = student.heads
    std = features.std(axis=0)
    heads.feature_mean.copy_(torch.from_numpy(features.mean(axis=0)))
    heads.feature_std.copy_(torch.from_numpy(np.where(std > 1e-6, std, 1.0).astype(np.float32)))
    x = torch.from_numpy(features)
    y = torch.from_numpy(targets / 100.0)
    m = torch.from_numpy(mask)
    params = [p for p in heads.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, (len(x) + batch_size - 1) // batch_size)
    total = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=max(total, 1))
    generator = torch.Generator().manual_seed(seed)
    losses, step = [], 0
    heads.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        running = 0.0
        for begin in range(0, len(x), batch_size):
            if step >= total:
                break
            idx = order[begin : begin + batch_size]
            pred = heads(x[idx]) / 100.0
            loss = (((pred - y[idx]) ** 2) * m[idx]).sum() / m[idx].sum().clamp(min=1.0)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            running += float(loss.detach()) * len(idx)
            step += 1
        losses.append(running / len(x))
        if step >= total:
            break
    heads.eval()
    return losses


def train(
    label_files: Sequence[str | Path],
    checkpoint: Path,
    size: int = DEFAULT_SIZE,
    epochs: int = 60,
    seed: int = 0,
    cache_dir: Path | None = None,
    max_steps: int | None = None,
    limit: int | None = None,
) -> dict:
    """Train a student from label files and save its state dict; returns a training summary."""
    seed_everything(seed)
    records = training_records(read_records(label_files))
    if limit is not None:
        records = records[:limit]
    if not records:
        raise SystemExit(f"{', '.join(map(str, label_files))}: no training records (all held out or empty)")
    student = build_student(pretrained=True)
    features = extract_features(student, records, size, cache_dir)
    targets, mask = targets_of(records)
    losses = fit_heads(student, features, targets, mask, epochs=epochs, max_steps=max_steps, seed=seed)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.save(student.state_dict(), checkpoint)
    summary = {
        "records": len(records),
        "sources": len({r["source"] for r in records}),
        "distorted": sum(1 for r in records if r.get("distortion")),
        "labels_per_axis": {axis: int(mask[:, i].sum()) for i, axis in enumerate(AXES)},
        "size": size,
        "epochs": len(losses),
        "seed": seed,
        "final_loss": losses[-1] if losses else None,
        "label_files": [str(p) for p in label_files],
    }
    checkpoint.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def load_student(checkpoint: str | Path) -> Student:
    """A trained student from a state dict saved by :func:`train` (loaded with weights_only)."""
    student = build_student(pretrained=False)
    student.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return student.eval()
