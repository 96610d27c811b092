"""What the whole-view factory reads and writes: its photo sources, training constants and work folder's files."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from export.common.errors import FactoryError
from export.common.splits import is_heldout
from export.distill.config import DEFAULT_WORK as DISTILL_WORK
from export.distill.config import WORK_FILES as DISTILL_FILES

REPO = Path(__file__).resolve().parents[2]
HUMAN = REPO.parent / "shared" / "human" / "clive-dev"
WALLPAPERS = Path("/usr/share/wallpapers")
DEV_HELDOUT_PERCENT = 25
# Debian plasma-workspace-wallpapers (free licences, 2,560-5,120 px): six photos are kept for
# acceptance only; six other photos and six illustrations give the training ladders.
EVAL_WALLPAPERS = ("Path", "EveningGlow", "ColorfulCups", "Grey", "FallenLeaf", "Kite")
TRAIN_WALLPAPERS = (
    "BytheWater",
    "ColdRipple",
    "DarkestHour",
    "OneStandsOut",
    "summer_1am",
    "Volna",
    "Altai",
    "Autumn",
    "Canopee",
    "Flow",
    "Honeywave",
    "SafeLanding",
)
TRAIN_SIZES = (1000, 2000, 4000)
DEV_LADDER_IMAGES = 80  # dev training photos that also give a ladder at their own 500 px
# Noise and JPEG ladders of corpus photos enlarged to 2,000 and 4,000 px: their crops are smooth, like sky or a
# defocused background, where strong noise otherwise passes for detail (held-out wallpaper noise
# ladders at 4,000 px: -0.70 without them, 0.3.0) and where the working size hides light compression
# (0.4.0 with noise-only smooth ladders: 4,000-px noise / JPEG -0.79 / -0.78; with JPEG too: -0.86 / -0.82).
SMOOTH_NOISE_IMAGES = 24
SMOOTH_SIZES = (2000, 4000)
SMOOTH_KINDS = ("gaussian_noise", "jpeg")
# Weight of the ladder ranking term in `fit`. With the crops' working size, ladders of photos over it are
# seen downscaled and weak damage nearly vanishes; at weight 1 the head let faint noise on smooth photos
# pass for detail. Measured on the 0.4.0 features (alpha 3000, 5-fold CV on the training part; training
# ladder steps that do not rise): weight 1: SRCC 0.782, 89 % of steps in order; 3: 0.780, 93 %; 10: 0.775, 97 %.
RANK_WEIGHT = 3.0
CORPUS = REPO.parent / "shared" / "corpus"
DISTILL_LABELS = DISTILL_WORK / DISTILL_FILES["labels"]  # where `export.distill all` writes them
PACKAGE_VERSION = "0.5.0"


def dev_photos(root: Path = HUMAN) -> list[tuple[Path, float, bool]]:
    """(image, mean opinion score, held out?) of every rated dev photo, in file order."""
    rows = []
    with open(root / "labels.tsv", encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            name, mos, *_ = line.rstrip("\n").split("\t")
            rows.append((root / "images" / name, float(mos), is_heldout(name, DEV_HELDOUT_PERCENT)))
    return rows


def wallpaper_photo(name: str) -> Path:
    """The largest file of one Debian wallpaper."""
    folder = WALLPAPERS / name / "contents" / "images"
    files = sorted(folder.glob("*x*.*"), key=lambda p: int(p.stem.split("x")[0]))
    if not files:
        raise FactoryError(f"{folder}: no wallpaper images (apt-get install plasma-workspace-wallpapers)")
    return files[-1]


def smooth_noise_photos() -> list[Path]:
    """Training photos of the corpus (split by export/common/splits.py) at least 375 px on the short side."""
    photos = []
    for path in sorted((CORPUS / "imagenet-sample").glob("*.JPEG")):
        if not is_heldout(path.name):
            with Image.open(path) as image:
                if min(image.size) >= 375:
                    photos.append(path)
        if len(photos) == SMOOTH_NOISE_IMAGES:
            break
    return photos


# The work folder, one name per file each step writes (steps read the earlier steps' files).
WORK_FILES = {
    "dev_features": "dev_features.npz",  # features: crop features of the rated dev photos
    "ladders": "ladders",  # features: one .npz per ladder photo and size
    "features_onnx": "features.onnx",  # features: the student's crop-feature graph
    "features_source": "features.source",  # features: which student that graph came from
    "teacher_labels": "teacher_labels.jsonl",  # teacher: its iqa of unrated photos
    "teacher_dev_labels": "teacher_dev_labels.jsonl",  # teacher: its iqa of the dev photos' training part
    "teacher_features": "teacher_features.npz",  # teacher: crop features of the unrated photos
    "teacher_summary": "teacher.json",
    "iqa_head": "iqa_head.pt",  # fit
    "fit": "fit.json",
    "iaa_records": "iaa_records.npz",  # calibrate: aesthetics of the distillation's label records
    "iaa_blend": "iaa_blend.npz",
    "iaa_blend_summary": "iaa_blend.json",
    "iaa_knots": "iaa_knots.json",
    "fp32": "model.onnx",  # export
    "int8": "model.int8.onnx",
    "export_summary": "export.json",
    "acceptance": "acceptance.json",  # package: the measured fidelity and the files it measured
    "speed": "speed.json",  # optional: timings for the card
    "student_provenance": "student-0.1.0.json",  # optional: how the distilled student was made
}
VARIANT_FILES = {"fp32": WORK_FILES["fp32"], "int8": WORK_FILES["int8"]}
