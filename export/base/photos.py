"""Which photos the bundled model learns from and which it is measured on, in one place.

People's ratings: ../shared/human/clive-dev (600 phone photos with mean opinion scores). Unrated photos for
synthetic damage: the corpus's training split and Debian's wallpaper photos. Clean professional photographs
(Debian's plasma-workspace-wallpapers and lomiri-wallpapers) are split by name: the ones in
`CLEAN_EVAL_*` are only ever measured on, never trained on.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from export.common.errors import FactoryError
from export.common.splits import is_heldout

from .crop_sampling import CROP

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
HUMAN = SHARED / "human" / "clive-dev"
CORPUS = SHARED / "corpus"
PLASMA = Path("/usr/share/wallpapers")
LOMIRI = Path("/usr/share/backgrounds")

# Photographs (not illustrations) among the wallpapers; the *_EVAL ones are kept for measuring.
PLASMA_TRAIN = ("BytheWater", "ColdRipple", "DarkestHour", "OneStandsOut", "summer_1am", "Volna")
PLASMA_EVAL = ("Path", "EveningGlow", "ColorfulCups", "Grey", "FallenLeaf", "Kite")
LOMIRI_TRAIN = (
    "Bridge_by_Sander_Klootwijk",
    "Picture_0B_by_freespace",
    "aitzgorri_by_Aitzol_Berasategi",
    "free_by_Peter_Nerlich",
    "greentock_by_Peter_Nerlich",
    "life_by_Aitzol_Berasategi",
    "sunset_by_Aitzol_Berasategi",
)
LOMIRI_EVAL = (
    "Kleiber_by_Lukas_Baubkus",
    "Dragonfly_by_Bolly",
    "seeding_by_Clements_Engelhardt",
    "picosdeeuropa_by_Aitzol_Berasategi",
    "friends_by_Aitzol_Berasategi",
    "Picture_1A_by_freespace",
    "Wine_by_Jakkub_Mede",
)
CORPUS_DAMAGE_PHOTOS = 300  # corpus training photos that also give damaged crops (not held at the top)
FOLDS = 5


class PhotoSetError(FactoryError, FileNotFoundError):
    """A photo set the recipe needs is not on this machine."""


def rated_photos(root: Path = HUMAN) -> list[tuple[Path, float]]:
    """(image, mean opinion score) of every rated dev photo, in file order."""
    labels = root / "labels.tsv"
    if not labels.is_file():
        raise PhotoSetError(f"{labels}: missing (the rated dev photos, ../shared/human/clive-dev)")
    rows = []
    with open(labels, encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            name, mos, *_ = line.rstrip("\n").split("\t")
            rows.append((root / "images" / name, float(mos)))
    return rows


def fold_of(name: str, folds: int = FOLDS) -> int:
    """The cross-validation fold of a rated photo, by the sha256 of its file name."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:4], "big") % folds


def plasma_photo(name: str) -> Path:
    """The largest file of one plasma wallpaper."""
    folder = PLASMA / name / "contents" / "images"
    files = sorted(folder.glob("*x*.*"), key=lambda p: int(p.stem.split("x")[0]))
    if not files:
        raise PhotoSetError(f"{folder}: no wallpaper images (apt-get install plasma-workspace-wallpapers)")
    return files[-1]


def lomiri_photo(name: str) -> Path:
    path = LOMIRI / f"{name}.jpg"
    if not path.is_file():
        raise PhotoSetError(f"{path}: missing (apt-get install lomiri-wallpapers)")
    return path


def professional_training_photos() -> list[Path]:
    return [plasma_photo(n) for n in PLASMA_TRAIN] + [lomiri_photo(n) for n in LOMIRI_TRAIN]


def professional_eval_photos() -> list[Path]:
    return [plasma_photo(n) for n in PLASMA_EVAL] + [lomiri_photo(n) for n in LOMIRI_EVAL]


def corpus_damage_photos(count: int = CORPUS_DAMAGE_PHOTOS) -> list[Path]:
    """The first `count` corpus training photos (export/common/splits.py) at least 224 px across."""
    from PIL import Image

    photos = []
    for path in sorted((CORPUS / "imagenet-sample").glob("*.JPEG")) + sorted((CORPUS / "bsds500").glob("*/*.jpg")):
        if is_heldout(path.name):
            continue
        with Image.open(path) as image:
            if min(image.size) >= CROP:
                photos.append(path)
        if len(photos) == count:
            break
    return photos
