"""Decoding: every Pillow mode, EXIF orientation, animations, bombs and broken files, draft decoding."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from _runtime_fixtures import tiny_package  # noqa: F401  (pytest fixture)
from PIL import Image

from perceptlite.backends.preprocess import draft_size, prepare_pixels
from perceptlite.images.decode import DecodeError, decode_array, decode_file, decode_pil, to_rgb
from perceptlite.package.manifest import InputSpec


def _gradient(width=64, height=48) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1), (x + y) * 255 // (width + height - 2)], -1).astype(np.uint8)


@pytest.mark.parametrize(
    "mode, make, expected",
    [
        ("L", lambda: Image.new("L", (8, 8), 100), (100, 100, 100)),
        ("1", lambda: Image.new("1", (8, 8), 1), (255, 255, 255)),
        ("LA", lambda: Image.new("LA", (8, 8), (0, 0)), (255, 255, 255)),  # fully transparent -> white
        ("LA opaque", lambda: Image.new("LA", (8, 8), (40, 255)), (40, 40, 40)),
        ("RGBA half", lambda: Image.new("RGBA", (8, 8), (0, 0, 0, 128)), (127, 127, 127)),
        ("RGBA opaque", lambda: Image.new("RGBA", (8, 8), (10, 20, 30, 255)), (10, 20, 30)),
        ("CMYK", lambda: Image.new("CMYK", (8, 8), (0, 255, 255, 0)), (255, 0, 0)),
        ("I;16", lambda: Image.fromarray(np.full((8, 8), 65535, np.uint16)), (255, 255, 255)),
        ("I;16 mid", lambda: Image.fromarray(np.full((8, 8), 32896, np.uint16)), (128, 128, 128)),
        ("I", lambda: Image.fromarray(np.full((8, 8), 257 * 200, np.int32), "I"), (200, 200, 200)),
        ("F unit", lambda: Image.fromarray(np.full((8, 8), 0.5, np.float32), "F"), (128, 128, 128)),
        ("F 0-255", lambda: Image.fromarray(np.full((8, 8), 77.0, np.float32), "F"), (77, 77, 77)),
        ("YCbCr", lambda: Image.new("RGB", (8, 8), (200, 50, 50)).convert("YCbCr"), (200, 50, 50)),
    ],
)
def test_every_mode_becomes_rgb(mode, make, expected):
    image = to_rgb(make())
    assert image.mode == "RGB"
    np.testing.assert_allclose(np.asarray(image)[4, 4], expected, atol=4)  # YCbCr round trip rounds


def test_palette_with_transparency_composites_on_white(tmp_path):
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.putpixel((0, 0), 1)
    image.info["transparency"] = 0
    path = tmp_path / "palette.png"
    image.save(path, transparency=0)
    decoded = decode_file(path)
    pixels = np.asarray(decoded.image)
    assert tuple(pixels[0, 0]) == (255, 0, 0)
    assert tuple(pixels[5, 5]) == (255, 255, 255)


@pytest.mark.parametrize(
    "suffix, mode",
    [
        (".png", "LA"),
        (".png", "RGBA"),
        (".png", "I;16"),
        (".tif", "CMYK"),
        (".tif", "F"),
        (".tif", "I"),
        (".bmp", "L"),
        (".webp", "RGBA"),
        (".jpg", "CMYK"),
        (".jpg", "L"),
    ],
)
def test_files_of_every_mode_decode(tmp_path, suffix, mode):
    base = Image.fromarray(_gradient())
    if mode == "I;16":
        image = Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257)
    elif mode in ("F", "I"):
        image = base.convert("L").convert(mode)
    else:
        image = base.convert(mode)
    path = tmp_path / f"img{suffix}"
    image.save(path)
    decoded = decode_file(path)
    assert decoded.image.mode == "RGB"
    assert (decoded.width, decoded.height) == (64, 48)
    assert decoded.image.size == (64, 48)
    gray = np.asarray(decoded.image.convert("L"), dtype=float)
    assert gray[:, -1].mean() > gray[:, 0].mean() + 50  # the gradient survived the conversion


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, orientation):
    # A 40x20 image whose top-left quadrant is red; after orientation its red corner moves.
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:10, :20] = (255, 0, 0)
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "oriented.jpg"
    image.save(path, exif=exif, quality=95)
    decoded = decode_file(path)
    transposed = orientation in (5, 6, 7, 8)
    assert (decoded.width, decoded.height) == ((20, 40) if transposed else (40, 20))
    assert decoded.image.size == (decoded.width, decoded.height)
    from PIL import ImageOps

    with Image.open(path) as raw:
        reference = np.asarray(ImageOps.exif_transpose(raw).convert("RGB"), dtype=int)
    np.testing.assert_array_equal(np.asarray(decoded.image, dtype=int), reference)


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    pixel = np.asarray(decode_file(path).image)[8, 8]
    assert pixel[0] > 200 and pixel[2] < 50


def _png_header_bomb(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header claims a huge size (the classic decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_decompression_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.png"
    _png_header_bomb(path, 100_000, 100_000)
    with pytest.raises(DecodeError, match="decompression bomb"):
        decode_file(path)  # Pillow's own global limit fires first in library use
    smaller = tmp_path / "smaller-bomb.png"
    _png_header_bomb(smaller, 6_000, 5_000)
    with pytest.raises(DecodeError, match="30 megapixels.*decompression bomb.*max-pixels"):
        decode_file(smaller, max_pixels=1_000_000)  # our own limit, read from the header only


def test_max_pixels_is_adjustable(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (300, 200)).save(path)
    with pytest.raises(DecodeError, match="limit"):
        decode_file(path, max_pixels=50_000)
    assert decode_file(path, max_pixels=60_000).width == 300


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("empty.jpg", b"", "empty file"),
        ("text.jpg", b"this is not a picture\n" * 10, "not an image"),
    ],
)
def test_broken_files_give_one_line_reasons(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DecodeError, match=reason) as info:
        decode_file(path)
    assert "\n" not in str(info.value)


def test_truncated_jpeg(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(_gradient(256, 256)).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError, match="truncated") as info:
        decode_file(path)
    assert "\n" not in str(info.value)


def test_missing_and_dangling(tmp_path):
    with pytest.raises(DecodeError, match="not found"):
        decode_file(tmp_path / "nope.jpg")
    link = tmp_path / "dangling.jpg"
    link.symlink_to(tmp_path / "gone.jpg")
    with pytest.raises(DecodeError, match="broken symbolic link"):
        decode_file(link)
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    with pytest.raises(DecodeError, match="loop"):
        decode_file(loop)


def test_unreadable_file(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root can read any file")
    path = tmp_path / "secret.jpg"
    Image.new("RGB", (8, 8)).save(path)
    path.chmod(0)
    with pytest.raises(DecodeError, match="permission denied"):
        decode_file(path)


def test_in_memory_inputs():
    array = _gradient()
    from_array = decode_array(array)
    assert (from_array.width, from_array.height) == (64, 48)
    np.testing.assert_array_equal(np.asarray(from_array.image), array)
    from_pil = decode_pil(Image.fromarray(array).convert("RGBA"))
    np.testing.assert_array_equal(np.asarray(from_pil.image), array)
    with pytest.raises(ValueError):
        decode_array(array.astype(np.float32))
    with pytest.raises(ValueError):
        decode_array(np.zeros((4, 4, 4), np.uint8))


def _exact_input(image: Image.Image, spec: InputSpec) -> np.ndarray:
    """The reference model input: one plain bicubic resize of the full image (as in training)."""
    from perceptlite.backends.preprocess import to_tensor

    return to_tensor(image.resize((spec.size[1], spec.size[0]), Image.Resampling.BICUBIC), spec)


@pytest.mark.parametrize("draft_factor", [2.0, 1.5])
@pytest.mark.parametrize("photo", ["bsds500/val", "imagenet-sample"])
def test_draft_decoding_keeps_model_input_within_tolerance(corpus_dir, tmp_path, photo, draft_factor):
    """JPEG draft decoding plus the reduced resize change the model input no more than a change of
    resize filter (bicubic -> bilinear) does, and the scores by less than half a point."""
    from _runtime_fixtures import make_package

    from perceptlite.scorer import Scorer

    package = make_package(tmp_path / "model", size=(64, 64), draft_factor=draft_factor)
    scorer = Scorer(package, device="cpu", threads=1)
    spec = scorer.package.input
    sources = sorted((corpus_dir / photo).glob("*.[jJ][pP]*[gG]"))[:5]
    assert sources
    drafted = 0
    for source in sources:
        # Upscale the photo so that draft decoding really kicks in (>= 2x the draft size).
        path = tmp_path / source.name
        with Image.open(source) as image:
            image.convert("RGB").resize((image.width * 3, image.height * 3), Image.Resampling.BICUBIC).save(path, quality=92)
        full = decode_file(path)
        draft = decode_file(path, draft_size=scorer.backend.draft_size)
        assert (draft.width, draft.height) == (full.width, full.height)  # records keep the true size
        assert min(draft.image.size) >= draft_size(spec)
        drafted += draft.image.width < full.image.width
        reference = _exact_input(full.image, spec)
        runtime_difference = np.abs(reference - scorer.backend.prepare(draft.image, draft.box)).mean()
        bilinear = full.image.resize(spec.size[::-1], Image.Resampling.BILINEAR)
        filter_difference = np.abs(reference - prepare_pixels(bilinear, spec)).mean()
        assert runtime_difference <= filter_difference, source.name
        assert runtime_difference * 0.226 * 255 < 3.0, source.name  # mean error under 3 of 255 levels
        exact = scorer.backend.infer([reference])[0]
        runtime = scorer.score(path)  # the file path takes the draft route
        for axis in ("iaa", "iqa", "ista"):
            assert abs(exact[axis] - getattr(runtime, axis)) < 0.5, (source.name, axis)
    assert drafted == len(sources)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_draft_region_follows_exif_orientation(corpus_dir, tmp_path, orientation, tiny_package):
    """A JPEG whose sides are not multiples of the draft scale decodes a partly filled edge of
    blocks; the region passed to the resize must follow the EXIF rotation/mirroring exactly."""
    from perceptlite.scorer import Scorer

    backend = Scorer(tiny_package, device="cpu", threads=1).backend
    spec = backend.package.input
    source = sorted((corpus_dir / "bsds500" / "val").glob("*.jpg"))[orientation]
    with Image.open(source) as image:
        photo = image.convert("RGB").resize((1003, 757), Image.Resampling.BICUBIC)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "oriented.jpg"
    photo.save(path, quality=92, exif=exif)
    full = decode_file(path)
    draft = decode_file(path, draft_size=draft_size(spec))
    assert draft.box is not None and draft.image.width < full.image.width
    reference = _exact_input(full.image, spec)
    runtime = backend.prepare(draft.image, draft.box)
    filter_difference = np.abs(reference - prepare_pixels(full.image.resize(spec.size[::-1], Image.Resampling.BILINEAR), spec)).mean()
    assert np.abs(reference - runtime).mean() < 0.75 * filter_difference


@pytest.mark.parametrize("suffix, plugin", [(".heic", "pillow_heif"), (".avif", None)])
def test_heic_and_avif_when_a_plugin_provides_them(tmp_path, suffix, plugin):
    from PIL import features

    from perceptlite.images.decode import IMAGE_EXTENSIONS, enable_plugins

    if plugin:
        pytest.importorskip(plugin)
    elif not features.check("avif"):
        pytest.skip("this Pillow has no AVIF support")
    assert suffix in IMAGE_EXTENSIONS
    enable_plugins()  # decode_file does this itself; the test needs it to write the file
    path = tmp_path / f"photo{suffix.upper()}"
    Image.fromarray(_gradient()).save(path, quality=90)
    decoded = decode_file(path)
    assert (decoded.width, decoded.height) == (64, 48)
    gray = np.asarray(decoded.image.convert("L"), dtype=float)
    assert gray[:, -1].mean() > gray[:, 0].mean() + 50
