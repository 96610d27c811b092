"""Images give the right result (issue 23, class 2): a TIFF's EXIF orientation is applied once (Pillow
turns a TIFF itself on load), in the CLI and the API; HEIC files decode with any number of workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _runtime_fixtures import tiny_package  # noqa: F401  (pytest fixture)
from PIL import Image

from perceptlite.images.decode import decode_file
from perceptlite.scorer import Scorer

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perceptlite", *map(str, args)], env=ENV, capture_output=True, text=True, timeout=300)


def _stored() -> np.ndarray:
    """A 40x20 image with a red top-left quadrant and a vertical gradient, so any turn shows."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[..., 1] = np.linspace(0, 255, 20, dtype=np.uint8)[:, None]
    pixels[:10, :20] = (255, 0, 0)
    return pixels


def _oriented(tmp_path: Path, suffix: str, orientation: int, **save) -> tuple[Path, Path]:
    """The stored image tagged with `orientation`, and a PNG of how it should look upright."""
    from PIL import ImageOps

    image = Image.fromarray(_stored())
    exif = Image.Exif()
    exif[0x0112] = orientation
    tagged = tmp_path / f"tagged{orientation}{suffix}"
    image.save(tagged, exif=exif, **save)
    upright = tmp_path / f"upright{orientation}.png"
    with Image.open(tagged) as reopened:  # the reference: how a viewer shows it (Pillow's exif_transpose)
        reference = ImageOps.exif_transpose(reopened)
        reference.convert("RGB").save(upright)
    return tagged, upright


@pytest.mark.parametrize("compression", [None, "tiff_lzw", "tiff_adobe_deflate"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_tagged_tiff_is_turned_once(tmp_path, orientation, compression):
    save = {"compression": compression} if compression else {}
    tagged, upright = _oriented(tmp_path, ".tif", orientation, **save)
    decoded = decode_file(tagged)
    expected = np.asarray(Image.open(upright), dtype=int)
    transposed = orientation in (5, 6, 7, 8)
    assert (decoded.width, decoded.height) == ((20, 40) if transposed else (40, 20))
    np.testing.assert_array_equal(np.asarray(decoded.image, dtype=int), expected)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_tagged_tiff_scores_as_its_upright_copy_in_the_cli_and_the_api(tiny_package, tmp_path, orientation):
    tagged, upright = _oriented(tmp_path, ".tiff", orientation)
    run = cli("score", "-m", tiny_package, tagged, upright, "--jsonl")
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in run.stdout.splitlines()]
    fields = ("iaa", "iqa", "ista", "width", "height")
    assert [records[0][f] for f in fields] == [records[1][f] for f in fields]
    scorer = Scorer(tiny_package)
    with Image.open(tagged) as opened:
        from_pil = scorer.score(opened)
    for result in (scorer.score(str(tagged)), scorer.score(tagged.read_bytes()), from_pil):
        assert (result.width, result.height) == (records[1]["width"], records[1]["height"])
        assert round(result.iaa, 2) == records[1]["iaa"] and round(result.iqa, 2) == records[1]["iqa"]


def test_heic_files_decode_with_many_workers_every_time(tiny_package, tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()  # to write the files; the scoring processes start without it
    rng = np.random.default_rng(5)
    names = []
    for index in range(24):
        path = tmp_path / f"{index}.heic"
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path, quality=90)
        names.append(path)
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(tmp_path / "no-suffix.jpg", format="HEIF")
    for _ in range(5):
        run = cli("score", "-m", tiny_package, *names, tmp_path / "no-suffix.jpg", "-j", "8", "--batch-size", "1", "--jsonl")
        assert run.returncode == 0, run.stderr
        records = [json.loads(line) for line in run.stdout.splitlines()]
        assert len(records) == 25 and all(record["error"] is None for record in records)
