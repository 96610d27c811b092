"""The GGUF backend fed as UniPercept's own code feeds the model, and failing one image at a time.

Real files all the way: the tiny image-sensitive UniPercept checkpoint converted by llama.cpp's converter,
run by llama-cpp-python through the real `perceptlite score` command, with export.unipercept.reference
(the torch re-implementation of UniPercept's score()) as the truth.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'perceptlite[gguf]')")
torch = pytest.importorskip("torch")

from export.unipercept import gguf as gguf_export  # noqa: E402
from export.unipercept import reference as unipercept  # noqa: E402
from perceptlite.backends.gguf import GgufBackend  # noqa: E402
from perceptlite.package.manifest import AXES, ModelPackageError, load_package, write_package  # noqa: E402
from perceptlite.pipeline import prepare_item  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
F16_TOLERANCE = 1.0  # points; as tests/backends/test_gguf_parity.py
EXIF_ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def package(unipercept_sensitive_checkpoint: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gguf") / "unipercept-tiny-gguf"
    assert gguf_export.main([str(unipercept_sensitive_checkpoint), str(out), "--quant", "f16", "--default", "f16", "--threads", "2"]) == 0
    return out


@pytest.fixture(scope="module")
def backend(package: Path):
    with GgufBackend(load_package(package), device="cpu", threads=2) as opened:
        yield opened


@pytest.fixture(scope="module")
def reference(unipercept_sensitive_checkpoint: Path):
    torch.set_num_threads(2)
    return unipercept.ReferenceScorer(unipercept_sensitive_checkpoint)


@pytest.fixture(scope="module")
def rotated_jpeg(corpus_dir: Path, tmp_path_factory) -> tuple[Path, Image.Image]:
    """A 1924x1284 mosaic of 16 real photos, stored turned a quarter with EXIF orientation 6, and the
    upright picture as a person sees it. Big enough for a 1/2 JPEG draft decode at 448 x 2."""
    photos = sorted((corpus_dir / "bsds500" / "val").glob("*.jpg"))[:16]
    mosaic = Image.new("RGB", (4 * 481, 4 * 321))
    for index, path in enumerate(photos):
        with Image.open(path) as photo:
            mosaic.paste(photo.convert("RGB").resize((481, 321)), (481 * (index % 4), 321 * (index // 4)))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # "rotate 90 clockwise to view"
    path = tmp_path_factory.mktemp("exif") / "turned.jpg"
    mosaic.transpose(Image.Transpose.ROTATE_90).save(path, quality=92, exif=exif)
    with Image.open(path) as stored:
        upright = ImageOps.exif_transpose(stored).convert("RGB")
    assert upright.size == mosaic.size
    return path, upright


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "perceptlite", *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _repackaged(package: Path, target: Path, **gguf_fields) -> Path:
    """A copy of the package with fields of its manifest's gguf section changed (and re-hashed)."""
    shutil.copytree(package, target)
    manifest = json.loads((target / "perceptlite.json").read_text())
    manifest["gguf"].update(gguf_fields)
    write_package(target, manifest, (target / "MODEL_CARD.md").read_text())
    return target


# -- what the model is fed -------------------------------------------------------------------------


def test_the_decode_path_feeds_the_official_pixels(backend: GgufBackend, rotated_jpeg) -> None:
    """File -> the pipeline's decode -> prepare equals UniPercept's preprocessing of the upright image:
    full-resolution bicubic 448x448 (no draft decode, no box reduce), bit for bit."""
    path, upright = rotated_jpeg
    assert backend.draft_size is None
    prepared = prepare_item(backend, path)
    official = np.asarray(upright.resize((448, 448), Image.Resampling.BICUBIC), dtype=np.uint8)  # reference.preprocess's resize
    assert np.array_equal(prepared.tensor, official)


def test_cli_scores_a_big_rotated_jpeg_as_the_reference_scores_the_upright_image(
    package: Path, backend, reference, rotated_jpeg, tmp_path: Path
) -> None:
    path, upright = rotated_jpeg
    out = tmp_path / "scores.jsonl"
    result = _cli("score", str(path), "--model", str(package), "--device", "cpu", "--jsonl", "-o", str(out))
    assert result.returncode == 0, result.stderr
    (record,) = _records(out)
    assert (record["width"], record["height"]) == upright.size
    theirs = reference.rate(upright)
    ours = backend.rate(backend.prepare(upright))
    for axis in AXES:
        assert abs(record[axis] - theirs[axis]) <= F16_TOLERANCE, (axis, record[axis], theirs[axis])
        assert record[axis] == pytest.approx(ours[axis], abs=0.006), axis  # same pixels, same model: only rounding differs


# -- the score-token mass --------------------------------------------------------------------------


def test_score_token_mass_matches_the_reference(backend: GgufBackend, reference, rotated_jpeg) -> None:
    _, upright = rotated_jpeg
    backend.rate(backend.prepare(upright))
    for axis in AXES:
        logits = reference.score_token_logits(upright, axis).double()
        theirs = float(torch.softmax(logits, 0)[reference.score_ids].sum())
        assert 0.0 < backend.score_mass[axis] <= 1.0
        assert backend.score_mass[axis] == pytest.approx(theirs, abs=0.01), axis
    assert backend.lowest_score_mass is not None and backend.lowest_score_mass <= min(backend.score_mass.values())


def test_images_below_the_mass_floor_get_error_records_and_the_run_goes_on(
    package: Path, backend, corpus_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in sorted((corpus_dir / "imagenet-sample").glob("*.JPEG"))[::150][:4]:
        shutil.copy(path, folder / path.name)
    masses = {}
    for path in sorted(folder.iterdir()):
        with Image.open(path) as image:
            backend.rate(backend.prepare(image.convert("RGB")))
        masses[path.name] = min(backend.score_mass.values())
    assert len(set(masses.values())) == len(masses), masses
    floor = float(np.median(list(masses.values())))
    floored = _repackaged(package, tmp_path / "floored", min_score_mass=floor)
    out = tmp_path / "scores.jsonl"
    result = _cli("score", str(folder), "--model", str(floored), "--device", "cpu", "--jsonl", "-o", str(out))
    assert result.returncode == 1, result.stderr  # some files failed
    records = {Path(r["path"]).name: r for r in _records(out)}
    assert set(records) == set(masses)
    for name, mass in masses.items():
        if mass < floor:
            assert "min_score_mass" in records[name]["error"] and all(records[name][axis] is None for axis in AXES)
        else:
            assert records[name].get("error") is None and all(records[name][axis] is not None for axis in AXES)
    assert "Traceback" not in result.stderr


def test_a_floor_outside_0_to_1_is_refused(package: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelPackageError, match="min_score_mass"):
        load_package(_repackaged(package, tmp_path / "bad", min_score_mass=1.5))


# -- llama.cpp failing on an image -------------------------------------------------------------------


def test_a_llama_cpp_failure_becomes_an_error_record(package: Path, corpus_dir: Path, tmp_path: Path) -> None:
    """A system message so long that the 256 image tokens overflow the 2,048-token context: llama.cpp
    refuses to evaluate each image (a RuntimeError), and each one gets an error record."""
    crowded = _repackaged(package, tmp_path / "crowded", system_message="perceptual " * 1900)
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in sorted((corpus_dir / "bsds500" / "test").glob("*.jpg"))[:2]:
        shutil.copy(path, folder / path.name)
    out = tmp_path / "scores.jsonl"
    result = _cli("score", str(folder), "--model", str(crowded), "--device", "cpu", "--jsonl", "-o", str(out))
    assert result.returncode == 1, result.stderr
    records = _records(out)
    assert len(records) == 2
    assert all("llama.cpp could not score this image" in r["error"] for r in records), records
    assert "Traceback" not in result.stderr


# -- VQA as the paper scores it ----------------------------------------------------------------------

TWO_OPTIONS = "Is the horizon level?\nA. Yes\nB. No"


def test_choose_follows_eval_vqa_by_default(backend: GgufBackend, reference, rotated_jpeg) -> None:
    """Greedy reply, first character upper-cased: the same letter as the reference's eval_vqa read-out."""
    _, upright = rotated_jpeg
    pixels = backend.prepare(upright)
    for question in (TWO_OPTIONS, "Which describes the colours best?\nA. Dull\nB. Natural\nC. Vivid\nD. Garish"):
        theirs = reference.ask(upright, question)
        assert theirs == theirs.upper()
        assert backend.choose(pixels, question) == theirs
        reply = backend.ask(pixels, unipercept.vqa_prompt(question), max_tokens=4)
        assert theirs == reply.strip().upper()[:1]


def test_logit_protocol_picks_only_listed_options(backend: GgufBackend, rotated_jpeg) -> None:
    _, upright = rotated_jpeg
    pixels = backend.prepare(upright)
    assert backend.choose(pixels, TWO_OPTIONS, protocol="logits") in ("A", "B")
    assert backend.choose(pixels, TWO_OPTIONS, "BCD", protocol="logits") == "B"  # C and D are not options here
    with pytest.raises(ValueError, match="not an option|none of the letters"):
        backend.choose(pixels, TWO_OPTIONS, "CD", protocol="logits")
    with pytest.raises(ValueError, match="unknown VQA protocol"):
        backend.choose(pixels, TWO_OPTIONS, protocol="argmax")
