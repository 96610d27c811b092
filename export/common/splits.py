"""A deterministic train / held-out split of the corpus by hashing file names.

The split depends only on the file name (not its folder, not the machine, not the order of
discovery), so labels, training and acceptance agree on which images were never trained on, and
every distorted variant of an image falls on the same side as the image itself.
"""

from __future__ import annotations

import hashlib
from pathlib import PurePath

HELDOUT_PERCENT = 15


def split_of(source: str, heldout_percent: int = HELDOUT_PERCENT) -> str:
    """'heldout' or 'train' for an image path, decided by the sha256 of its file name."""
    name = PurePath(str(source)).name.encode("utf-8")
    bucket = int.from_bytes(hashlib.sha256(name).digest()[:4], "big") % 100
    return "heldout" if bucket < heldout_percent else "train"


def is_heldout(source: str, heldout_percent: int = HELDOUT_PERCENT) -> bool:
    """True if the image is kept out of training (used for acceptance only)."""
    return split_of(source, heldout_percent) == "heldout"
