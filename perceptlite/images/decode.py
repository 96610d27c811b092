"""Turn an image file (or an in-memory image) into an upright 8-bit RGB PIL image.

Everything a real photo folder throws at us ends here: EXIF orientation, every Pillow mode,
animations (first frame), decompression bombs, and broken files. A file that cannot be decoded
raises :class:`DecodeError` whose message is a one-line reason for the score record.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import io
import os
import re
import stat
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import one_line as _one_line
from .memory import DECODE_MEMORY, decode_cost, gigabytes

# Pillow's own hard limit (2 x Image.MAX_IMAGE_PIXELS), about 179 megapixels. Above it a file is
# treated as a decompression bomb and not decoded; `max_pixels` (--max-pixels, ScoreOptions)
# changes it, in either direction, without the caller touching Pillow's global.
DEFAULT_MAX_PIXELS = 178_956_970

# Transparent pixels are composited on white, as image viewers and print previews show them.
BACKGROUND = (255, 255, 255)

# EXIF orientations that swap width and height.
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}
_ORIENTATION_TAG = 0x0112

BASE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


_HEIF_SUFFIXES = (".heic", ".heif")
_plugins_lock = threading.Lock()
_plugins = {"ready": False, "found": False}


def _optional_extensions() -> tuple[str, ...]:
    """HEIC/AVIF extensions that a registry plugin (or Pillow itself) can decode here."""
    from PIL import features

    extra: list[str] = []
    if importlib.util.find_spec("pillow_heif") is not None:
        extra += list(_HEIF_SUFFIXES)
    if features.check("avif") or importlib.util.find_spec("pillow_avif") is not None:
        extra.append(".avif")
    return tuple(extra)


def enable_plugins() -> bool:
    """Register pillow-heif / pillow-avif-plugin openers once per process; True when one is registered.

    They are imported on the first decode, not at import, to keep start-up fast. Registration
    changes Pillow's global format tables, so it runs under a lock and is marked done only when
    finished: a thread that arrives meanwhile waits, and never opens a HEIC before its opener is
    there (the pipeline also calls this before its decode workers start)."""
    if _plugins["ready"]:
        return _plugins["found"]
    with _plugins_lock:
        if not _plugins["ready"]:
            _plugins["found"] = _register_heif() | _register_avif()
            _plugins["ready"] = True
    return _plugins["found"]


def _register_heif() -> bool:
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        return True
    except Exception:  # noqa: BLE001 - optional plugin: absent or broken means "not supported"
        return False


def _register_avif() -> bool:
    try:
        import pillow_avif  # noqa: F401  (registers itself)

        return True
    except Exception:  # noqa: BLE001
        return False


IMAGE_EXTENSIONS = BASE_EXTENSIONS + _optional_extensions()


# Pillow warns (decompression bomb, corrupt EXIF, truncated data) on stderr from its own modules.
# perceptlite enforces its own pixel limit and reports a damaged file in the record's `error`, so
# these warnings are noise: they are ignored process-wide (a warnings filter cannot be per thread).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
warnings.filterwarnings("ignore", module=r"PIL(\.|$)")


class DecodeError(Exception):
    """An image that could not be decoded; the message is a one-line reason."""


@dataclass
class DecodedImage:
    """An upright RGB image plus the size of the full image after EXIF orientation."""

    image: Image.Image  # mode "RGB"; may be smaller than width x height after draft decoding
    width: int
    height: int
    # After draft decoding, the region of `image` that holds the whole picture, in (fractional)
    # pixels: a JPEG whose size is not a multiple of the scale decodes a partly filled last
    # row/column of blocks. Resizing from this box keeps the geometry exact. None: all of `image`.
    box: tuple[float, float, float, float] | None = None
    prepared: Any = None  # what `views.make` returned, when decode_file was given views


@dataclass(frozen=True)
class Views:
    """What a model makes of a decoded image (its input views: the whole image, crops...), made
    while the decode still holds its memory reservation, so a full-size decode is counted until
    every view is cut from it. `make(image, box)` returns them; `bytes` is their size."""

    make: Callable[[Image.Image, Any], Any]
    bytes: int = 0


def decode_file(
    path: str | os.PathLike[str] | IO[bytes],
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: int | None = None,
    views: Views | None = None,
) -> DecodedImage:
    """Decode an image file (a path, or a binary file object) to upright RGB.

    `draft_size` lets JPEG files decode at a reduced scale (1/2, 1/4, 1/8) as long as both sides stay
    at least `draft_size` pixels. `views`: also make the model's views (``.prepared``) inside the
    decode's memory reservation. Raises DecodeError with a one-line reason.
    """
    enable_plugins()  # before the first open, so a HEIC (with or without its extension) is known
    return _decode_file(path, max_pixels, draft_size, views)


_UNIDENTIFIED = "not an image, or a format Pillow cannot read"


def decode_bytes(
    data: bytes | bytearray | memoryview, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int | None = None, views: Views | None = None
) -> DecodedImage:
    """Decode an encoded image held in memory (the bytes of a file) exactly as decode_file decodes the file."""
    if len(data) == 0:
        raise DecodeError("empty file (0 bytes)")
    return decode_file(io.BytesIO(bytes(data)), max_pixels, draft_size, views)


# Pillow's global guard is lifted only around the opens that need a limit above it, one at a time.
_PILLOW_LIMIT_LOCK = threading.Lock()


def _above_pillow_limit(max_pixels: int) -> bool:
    """Whether `max_pixels` allows images that Pillow's own guard (PIL.Image.MAX_IMAGE_PIXELS) refuses."""
    limit = Image.MAX_IMAGE_PIXELS
    return limit is not None and (not max_pixels or max_pixels > 2 * limit)


@contextlib.contextmanager
def _pillow_limit_lifted():
    with _PILLOW_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _open(handle, max_pixels: int) -> Image.Image:
    """Image.open, with Pillow's decompression-bomb guard lifted when `max_pixels` is above it
    (perceptlite checks `max_pixels` itself, from the header)."""
    try:
        return Image.open(handle)
    except Image.DecompressionBombError as exc:
        if not _above_pillow_limit(max_pixels):
            raise DecodeError(_bomb_reason(exc, max_pixels)) from None
    handle.seek(0)
    with _pillow_limit_lifted():
        return Image.open(handle)


def _bomb_reason(exc: Exception, max_pixels: int) -> str:
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"image has {int(found.group(1)) / 1e6:.0f} megapixels, above" if found else "image is above"
    return f"{size} the {max_pixels / 1e6:.0f} MP limit (possible decompression bomb; raise --max-pixels to allow it)"


def _decode_file(path, max_pixels: int, draft_size: int | None, views: Views | None) -> DecodedImage:
    try:
        with _open_image_file(path) as handle, _open(handle, max_pixels) as image:
            width, height = image.size
            _check_pixels(width, height, max_pixels)
            # Pillow reads a PNG's EXIF by decoding the whole image (eXIf may follow the pixels), so
            # its orientation is read inside the reservation; a turned copy is then not counted.
            early = image.format not in _EXIF_AFTER_PIXELS
            orientation = _orientation(image) if early else 1
            box = None
            if draft_size and image.format == "JPEG":
                drafted = image.draft("RGB", (draft_size, draft_size))
                box = drafted[1] if drafted else None
            cost = decode_cost(image, turned=orientation in _TRANSPOSES) + (views.bytes if views else 0)
            with DECODE_MEMORY.reserve(cost, _memory_refusal(image)):
                image.load()
                # Some decoders turn the image upright while loading and drop the tag (Pillow's
                # TIFF, whose size is then already upright): what is left after loading is to do.
                orientation = _orientation(image)
                rgb, box = _small_rgb(image, box, orientation, draft_size)
                if rgb is not image:
                    image.close()  # frees the full-size decode before the reservation ends
                prepared = _made(views, rgb, box)
    except DecodeError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's guard fired while loading (a few formats check there)
        raise DecodeError(_bomb_reason(exc, max_pixels)) from None
    except FileNotFoundError:
        kind = "broken symbolic link" if os.path.islink(path) else "file not found"
        raise DecodeError(kind) from None
    except PermissionError:
        raise DecodeError("permission denied (cannot read the file)") from None
    except IsADirectoryError:
        raise DecodeError("is a folder, not an image file") from None
    except UnidentifiedImageError:
        raise DecodeError(_unidentified_reason(path)) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DecodeError("symbolic link loop") from None
        raise DecodeError(f"corrupt or truncated image data ({_one_line(exc)})") from None
    except (ValueError, SyntaxError, EOFError, MemoryError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(f"corrupt image data ({_one_line(exc)})") from None
    if orientation in _TRANSPOSED_ORIENTATIONS:
        width, height = height, width
    return DecodedImage(rgb, width, height, box, prepared)


def _made(views: Views | None, image: Image.Image, box) -> Any:
    """The model's views of a decoded image; a failure (a damaged image that decoded) is one line."""
    if views is None:
        return None
    try:
        return views.make(image, box)
    except (OSError, ValueError, MemoryError) as exc:
        raise DecodeError(f"cannot process image ({_one_line(exc)})") from None


_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def _open_image_file(path):
    """A binary file object for `path`, opened only when it is a regular file (links followed).

    FIFOs, sockets and devices are refused from their status, without opening them; the file is
    opened non-blocking and checked again, so one swapped in meanwhile cannot hang the read either.
    A file object passed in is used as it is (and not closed).
    """
    if hasattr(path, "read"):
        return _Borrowed(path)
    _require_regular(os.stat(path).st_mode)
    fd = os.open(path, _OPEN_FLAGS)
    try:
        _require_regular(os.fstat(fd).st_mode)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _require_regular(mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise DecodeError("is a folder, not an image file")
    raise DecodeError(f"not a regular file ({_special_kind(mode)}); not read")


def _special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


class _Borrowed:
    """A caller's file object in a `with` block that leaves it open."""

    def __init__(self, handle):
        self.handle = handle

    def __enter__(self):
        return self.handle

    def __exit__(self, *exc_info) -> None:
        pass


def decode_pil(image: Image.Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Normalise an in-memory PIL image (EXIF orientation applied if still tagged) to RGB."""
    _check_pixels(*image.size, max_pixels)
    try:
        image.load()  # a TIFF turns itself upright on load (and drops its tag): read the tag after
        upright = _upright(image, _orientation(image))
        return DecodedImage(to_rgb(upright), *upright.size)
    except (OSError, ValueError) as exc:
        raise DecodeError(f"cannot read this image ({_one_line(exc)})") from None


def check_array(array: np.ndarray) -> np.ndarray:
    """The array if it is HxWx3 (RGB) or HxW (gray) uint8; ValueError (the caller's bug) otherwise."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"expected a uint8 array of shape HxWx3 (RGB) or HxW, got {array.dtype} {array.shape}")
    return array


def decode_array(array: np.ndarray, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Wrap an HxWx3 (RGB) or HxW (gray) uint8 numpy array as an RGB image.

    A wrong dtype or shape raises ValueError; an empty or too large image raises DecodeError.
    """
    array = check_array(array)
    _check_pixels(array.shape[1], array.shape[0], max_pixels)
    image = Image.fromarray(np.ascontiguousarray(array), "L" if array.ndim == 2 else "RGB")
    return DecodedImage(to_rgb(image), image.width, image.height)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB.

    Transparency (LA, PA, RGBA, P with a transparent colour) is composited on white. 16-bit images
    (I;16*) are scaled from 0-65535 to 0-255; 32-bit integer images (I) likewise when their maximum
    is above 255, else read as 0-255; float images (F) are read as 0-1 when their maximum is at most
    1, else as 0-255 (clipped).
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("L", "1", "CMYK", "YCbCr", "RGBX", "HSV"):
        return image.convert("RGB")
    if mode == "P" and "transparency" not in image.info:
        return image.convert("RGB")
    if mode in ("LA", "La", "PA", "RGBA", "RGBa", "P"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, BACKGROUND)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image).astype(np.float32)
        if mode.startswith("I;16") or (values.size and values.max() > 255):
            values = values / 257.0  # 16-bit range 0-65535 -> 0-255
        gray = np.clip(values + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float32))
        if values.size and values.max() <= 1.0:
            values = values * 255.0
        gray = np.clip(values + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    return image.convert("RGB")  # LAB and rarer modes; ValueError if Pillow cannot


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise DecodeError(f"empty image ({width}x{height} pixels); nothing to score")
    if max_pixels and width * height > max_pixels:
        raise DecodeError(
            f"{width}x{height} image has {width * height / 1e6:.0f} megapixels, above the "
            f"{max_pixels / 1e6:.0f} MP limit (possible decompression bomb; raise --max-pixels to allow it)"
        )


# Formats whose EXIF Pillow finds only by loading the pixels.
_EXIF_AFTER_PIXELS = ("PNG",)


def _small_rgb(image: Image.Image, box, orientation: int, draft_size: int | None):
    """The loaded image upright, reduced (see _reduced) and RGB, and the picture's region in it.
    A function of its own, so that every full-size intermediate is freed when it returns."""
    if box is not None:
        box = _upright_box(box, image.size, orientation)
    reduced, box = _reduced(_upright(image, orientation), box, draft_size)
    if box is not None and tuple(box) == (0, 0, *reduced.size):
        box = None  # the whole image: no partly filled edge
    return to_rgb(reduced), box


# Modes whose conversion to RGB commutes exactly with box-averaging; any other mode (transparency,
# 16-bit, palette, CMYK...) is made RGB at full size before it is reduced.
_REDUCIBLE = ("RGB", "RGBX", "L")


def _reduced(image: Image.Image, box, draft_size: int | None):
    """A big decoded image box-reduced by an integer factor per axis while both sides stay at least
    `draft_size`, and the region of the result that holds the picture.

    This is the reduction the final resize would start with (Pillow's ``reducing_gap``), done
    before the RGB conversion so that its copies are small: the model input does not change.
    """
    if not draft_size:
        return image, box
    factors = (max(1, image.width // draft_size), max(1, image.height // draft_size))
    if factors == (1, 1):
        return image, box
    if image.mode not in _REDUCIBLE:
        image = to_rgb(image)
    reduced = image.reduce(factors)
    x0, y0, x1, y1 = box or (0, 0, image.width, image.height)
    return reduced, (x0 / factors[0], y0 / factors[1], x1 / factors[0], y1 / factors[1])


def _memory_refusal(image: Image.Image):
    def refusal(cost: int, capacity: int) -> DecodeError:
        kind = image.format or "image"
        return DecodeError(
            f"{image.width}x{image.height} {kind} needs about {gigabytes(cost)} of memory to decode, above the "
            f"{gigabytes(capacity)} decode memory budget ({kind} cannot be decoded at reduced size); "
            "raise --decode-memory to allow it"
        )

    return refusal


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_ORIENTATION_TAG, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the image
        return 1


# EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose does).
_TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _upright(image: Image.Image, orientation: int) -> Image.Image:
    """The image turned upright for its EXIF `orientation` (the image itself may carry no EXIF,
    e.g. after reduction)."""
    method = _TRANSPOSES.get(orientation)
    return image if method is None else image.transpose(method)


def _upright_box(box, size: tuple[int, int], orientation: int) -> tuple[float, float, float, float]:
    """Where `box` (in the stored image) lands once the image is turned upright by its EXIF tag."""
    x0, y0, x1, y1 = box
    w, h = size
    return {
        2: (w - x1, y0, w - x0, y1),  # mirror left-right
        3: (w - x1, h - y1, w - x0, h - y0),  # rotate 180
        4: (x0, h - y1, x1, h - y0),  # mirror top-bottom
        5: (y0, x0, y1, x1),  # transpose
        6: (h - y1, x0, h - y0, x1),  # rotate 90 clockwise
        7: (h - y1, w - x1, h - y0, w - x0),  # transverse
        8: (y0, w - x1, y1, w - x0),  # rotate 90 counter-clockwise
    }.get(orientation, (x0, y0, x1, y1))


def _unidentified_reason(path: str | os.PathLike) -> str:
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
    except (OSError, TypeError):  # TypeError: a file object rather than a path
        pass
    return _UNIDENTIFIED
