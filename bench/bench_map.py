"""Does the quality map find a damaged region, and how fast is it? (issue 25)

    python bench/bench_map.py                     # the 7 measuring photos, 4 damage kinds, 3 places each
    python bench/bench_map.py --photos tuning     # the 6 photos the map's design was chosen on
    python bench/bench_map.py --placements 5 --model ./my-package
    python bench/bench_map.py --speed-only

Each clean photo gets one region damaged (Gaussian blur, Gaussian noise, JPEG blocks or
pixelation), a sixth to a quarter of the picture, of random shape and place. The map's cells lying
mostly (>= half their area) inside the region are compared with the cells that do not touch it
(cells partly inside are left out): the AUC that a damaged cell has the lower iqa, per damaged
photo. It prints, per kind, the mean and the lowest AUC over the damaged photos, and the AUC of
all their cells pooled (each photo's cells ranked against the other cells of the same photo).
The photos are the 13 professional photos the bundled model never trained on (its card;
export/base/photos.py), split once, before anything was measured, into two fixed sets:
TUNING, the six Plasma wallpapers, on which the map's design (cell size, crops per cell) was chosen
and on which the previous session looked at AUCs; and MEASURING, the seven Lomiri wallpapers,
which the map's AUC is reported on and nothing was chosen on.

Speed: a 12-MP (4000 x 3000) JPEG's map through Scorer.quality_map, decode included, median of
runs after a warm-up, with the load average (the CPU may be shared), the CPU time it used (what it
would take spread over idle cores) and the peak resident memory.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perceptlite import QualityMap, Scorer  # noqa: E402
from perceptlite.backends.preprocess import working_scale  # noqa: E402

# Fixed before measuring: the design is tuned on TUNING only; the reported AUC is MEASURING's.
TUNING = ("Path", "EveningGlow", "ColorfulCups", "Grey", "FallenLeaf", "Kite")  # /usr/share/wallpapers
MEASURING = (  # /usr/share/backgrounds
    "Kleiber_by_Lukas_Baubkus",
    "Dragonfly_by_Bolly",
    "seeding_by_Clements_Engelhardt",
    "picosdeeuropa_by_Aitzol_Berasategi",
    "friends_by_Aitzol_Berasategi",
    "Picture_1A_by_freespace",
    "Wine_by_Jakkub_Mede",
)
PHOTO_SETS = {"tuning": TUNING, "measuring": MEASURING, "all": TUNING + MEASURING}
KINDS = ("blur", "noise", "jpeg", "pixelate")
AREA = (1 / 6, 1 / 4)  # the damaged region's share of the picture
ASPECT = (0.6, 1.6)  # its width / height, relative to the picture's
INSIDE = 0.5  # a cell is inside the region when at least this share of it is
# Strength of each kind in the pixels the model reads (the photo at its working scale), so a
# large photo is damaged as visibly as a small one; JPEG's quality is that of the photo's own pixels.
LEVELS = {
    "moderate": {"blur_sigma": 2.0, "noise_sigma": 20.0, "jpeg_quality": 12, "pixel_block": 6},
    "strong": {"blur_sigma": 4.0, "noise_sigma": 40.0, "jpeg_quality": 5, "pixel_block": 12},
}


def wallpaper(name: str) -> Path:
    """Where one held-out photo lies (Debian's plasma-workspace-wallpapers or lomiri-wallpapers)."""
    if name in MEASURING:
        return Path("/usr/share/backgrounds") / f"{name}.jpg"
    return Path("/usr/share/wallpapers") / name / "contents" / "images" / "2560x1600.jpg"


def held_out_photos(names=MEASURING) -> dict[str, Image.Image]:
    """The clean held-out photos among `names` that are installed (EXIF orientation applied)."""
    return {name: ImageOps.exif_transpose(Image.open(wallpaper(name))).convert("RGB") for name in names if wallpaper(name).exists()}


def random_region(width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A box covering AREA of a width x height picture, of random aspect and place."""
    share = rng.uniform(*AREA)
    aspect = np.exp(rng.uniform(np.log(ASPECT[0]), np.log(ASPECT[1])))
    w = min(width, round(width * np.sqrt(share * aspect)))
    h = min(height, round(width * height * share / w))
    left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    return left, top, left + w, top + h


def damage(
    photo: Image.Image, kind: str, region: tuple[int, int, int, int], model_scale: float, level: str = "moderate", seed: int = 0
) -> Image.Image:
    """A copy of `photo` with `region` damaged; `model_scale`: working pixels per photo pixel (<= 1
    for photos over the working size: their damage is scaled up so that the model sees `level`)."""
    strength = LEVELS[level]
    part = photo.crop(region)
    if kind == "blur":
        part = part.filter(ImageFilter.GaussianBlur(strength["blur_sigma"] / model_scale))
    elif kind == "noise":
        # Downscaling by `model_scale` averages white noise down by about that factor.
        pixels = np.asarray(part, dtype=np.float32)
        noisy = pixels + np.random.default_rng(seed).normal(0, strength["noise_sigma"] / model_scale, pixels.shape)
        part = Image.fromarray(np.clip(noisy, 0, 255).round().astype(np.uint8))
    elif kind == "jpeg":
        buffer = io.BytesIO()
        part.save(buffer, format="JPEG", quality=strength["jpeg_quality"])
        part = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    elif kind == "pixelate":
        block = max(2, round(strength["pixel_block"] / model_scale))
        small = part.resize((max(1, part.width // block), max(1, part.height // block)), Image.Resampling.BOX)
        part = small.resize(part.size, Image.Resampling.NEAREST)
    else:
        raise ValueError(f"unknown damage {kind!r}")
    damaged = photo.copy()
    damaged.paste(part, region[:2])
    return damaged


def split_cells(quality: QualityMap, region: tuple[int, int, int, int]) -> tuple[list[float], list[float]]:
    """(iqa of the cells mostly inside `region`, iqa of the cells that do not touch it)."""
    inside, outside = [], []
    for cell in quality.cells:
        x0, y0, x1, y1 = cell.box
        overlap = max(0, min(x1, region[2]) - max(x0, region[0])) * max(0, min(y1, region[3]) - max(y0, region[1]))
        if overlap >= INSIDE * (x1 - x0) * (y1 - y0):
            inside.append(cell.iqa)
        elif overlap == 0:
            outside.append(cell.iqa)
    return inside, outside


def auc_low(inside: list[float], outside: list[float]) -> float:
    """P(an inside cell's iqa < an outside cell's), ties counted half (Mann-Whitney)."""
    a, b = np.asarray(inside)[:, None], np.asarray(outside)[None, :]
    return float(np.mean((a < b) + 0.5 * (a == b)))


def damaged_trials(scorer: Scorer, photos: dict[str, Image.Image], kinds, placements: int, level: str = "moderate", seed: int = 0):
    """Yield (photo, kind, inside, outside) for each damaged photo (those with cells on both sides)."""
    crops = scorer.package.input.crops
    assert crops is not None
    for index, (name, photo) in enumerate(photos.items()):
        scale = working_scale(photo.width, photo.height, crops)
        for kind in kinds:
            rng = np.random.default_rng([seed, index, KINDS.index(kind)])  # the same places whichever kinds run
            for placement in range(placements):
                region = random_region(photo.width, photo.height, rng)
                quality = scorer.quality_map(damage(photo, kind, region, scale, level, seed=placement))
                inside, outside = split_cells(quality, region)
                if inside and outside:
                    yield name, kind, inside, outside


def validate(scorer: Scorer, photos: dict[str, Image.Image], placements: int, level: str, verbose: bool) -> dict[str, dict[str, float]]:
    """Print and return, per kind, the mean, lowest and pooled AUC over the damaged photos."""
    print(f"{level} damage {LEVELS[level]}; {placements} places per photo and kind")
    per_kind: dict[str, list[float]] = {kind: [] for kind in KINDS}
    pooled: dict[str, list[tuple[list[float], list[float]]]] = {kind: [] for kind in KINDS}
    for name, kind, inside, outside in damaged_trials(scorer, photos, KINDS, placements, level):
        per_kind[kind].append(auc_low(inside, outside))
        pooled[kind].append((inside, outside))
        if verbose:
            print(f"  {name:12s} {kind:8s} cells in/out {len(inside):2d}/{len(outside):2d}  AUC {per_kind[kind][-1]:.3f}", flush=True)
    summary = {}
    for kind in KINDS:
        values = per_kind[kind]
        pairs = sum(len(i) * len(o) for i, o in pooled[kind])
        pooled_auc = sum(auc_low(i, o) * len(i) * len(o) for i, o in pooled[kind]) / pairs
        summary[kind] = {"mean": statistics.fmean(values), "lowest": min(values), "pooled": pooled_auc, "photos": len(values)}
        print(
            f"{kind:8s} AUC mean {summary[kind]['mean']:.3f}  lowest {summary[kind]['lowest']:.3f}  "
            f"pooled {pooled_auc:.3f}  ({len(values)} damaged photos)  {'ok' if summary[kind]['mean'] >= 0.85 else 'BELOW 0.85'}"
        )
    return summary


def twelve_megapixels(folder: str) -> str:
    """A 4000 x 3000 JPEG made from a wallpaper (enlarged, then cropped to 4:3), in a child process
    so that this process's peak memory is the map's own."""
    path = os.path.join(folder, "12mp.jpg")
    code = (
        "from PIL import Image; "
        f"Image.open({str(wallpaper('Kite'))!r}).convert('RGB').resize((4800, 3000), Image.Resampling.LANCZOS)"
        f".crop((400, 0, 4400, 3000)).save({path!r}, quality=92)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    return path


def speed(scorer: Scorer, runs: int) -> None:
    """Print the map time of a 12-MP JPEG (median of `runs`), the load average and the peak memory."""
    with tempfile.TemporaryDirectory() as folder:
        path = twelve_megapixels(folder)
        scorer.quality_map(path)  # warm-up: the session's first run allocates
        load = os.getloadavg()[0]
        times, cpu = [], []
        for _ in range(runs):
            start, start_cpu = time.perf_counter(), time.process_time()
            quality = scorer.quality_map(path)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        score_start = time.perf_counter()
        scorer.score(path)
        score_time = time.perf_counter() - score_start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the model, the JPEG's decode and its maps
    cells = quality.grid[0] * quality.grid[1]
    print(
        f"12-MP map: {statistics.median(times):.2f} s median of {runs} (min {min(times):.2f}, {cells} cells "
        f"{quality.grid[0]}x{quality.grid[1]}, {scorer.backend.parallel_runs} runs at once); the image's score alone {score_time:.2f} s; "
        f"load average {load:.2f} -> {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; peak RSS {peak:.0f} MiB"
    )
    # CPU time is what the map costs whatever else runs: on idle cores it takes about this / cores.
    print(
        f"12-MP map CPU time: {statistics.median(cpu):.2f} s (all threads), {statistics.median(cpu) / (os.cpu_count() or 1):.2f} s per core"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="Model package [default: the bundled one].")
    parser.add_argument("--photos", choices=sorted(PHOTO_SETS), default="measuring", help="Which held-out photos [default: measuring].")
    parser.add_argument("--placements", type=int, default=3, help="Damaged places per photo and kind.")
    parser.add_argument("--levels", nargs="+", choices=sorted(LEVELS), default=list(LEVELS), help="Damage strengths to validate.")
    parser.add_argument("--runs", type=int, default=5, help="Timed runs of the 12-MP map (0: none).")
    parser.add_argument("--speed-only", action="store_true", help="Only time the 12-MP map.")
    parser.add_argument("--verbose", action="store_true", help="One line per damaged photo.")
    args = parser.parse_args()
    scorer = Scorer(args.model, device="cpu")
    print(f"model: {scorer.package.name} {scorer.package.version} ({scorer.package.default_variant})")
    if args.runs:
        speed(scorer, args.runs)  # first: the peak memory it prints is then the map's, not the validation's
    if not args.speed_only:
        photos = held_out_photos(PHOTO_SETS[args.photos])
        print(f"{args.photos} photos: {', '.join(f'{n} {p.width}x{p.height}' for n, p in photos.items())}")
        for level in args.levels:
            validate(scorer, photos, args.placements, level, args.verbose)


if __name__ == "__main__":
    main()
