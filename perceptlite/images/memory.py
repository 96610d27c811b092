"""The decode memory budget: how many bytes image decoding may hold at once, in the whole process.

Decoding a big image costs far more memory than its file: a 13,000 x 13,000 WebP of 446 KB needs
about 2.7 GB while Pillow decodes it. Every file decode first reserves its estimated peak (see
:func:`decode_cost`) from one process-wide budget, waits while other decodes hold too much of it
(so big images are decoded one at a time while small ones go on in parallel), and is refused with
a one-line reason when its estimate alone is above the budget. JPEGs are decoded at reduced size
(DCT draft) before the estimate, so only formats that Pillow cannot decode at reduced size
(WebP, PNG, TIFF, ...) are ever refused for size.

The default is ``DEFAULT_DECODE_MEMORY`` (1 GiB); ``perceptlite score --decode-memory MB`` or
:func:`set_decode_memory` change it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from PIL import Image

DEFAULT_DECODE_MEMORY = 1 << 30  # bytes

# Bytes per pixel that Pillow holds for a decoded image of each mode (RGB is stored as 4 bytes).
_STORED_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
# Extra full-size bytes per pixel while the image is made RGB (copies made before it can be reduced).
_CONVERSION_BYTES = {
    "RGBA": 8,
    "LA": 8,
    "La": 8,
    "RGBa": 8,
    "PA": 8,
    "P": 8,
    "1": 1,
    "I": 9,
    "F": 9,
    "I;16": 9,
    "I;16L": 9,
    "I;16B": 9,
    "I;16N": 9,
    "CMYK": 4,
    "YCbCr": 4,
    "LAB": 4,
    "HSV": 4,
}
# Extra bytes per pixel a format's decoder holds while loading: Pillow's WebP decoder keeps
# libwebp's RGBA canvas and a copy of the frame's bytes besides the image.
_DECODER_BYTES = {"WEBP": 12}
SAFETY = 1.25


def decode_cost(image: Image.Image, turned: bool = False) -> int:
    """Estimated peak bytes to load `image` (as opened, after any draft), turn it upright (a copy
    when `turned`) and make it RGB."""
    stored = _STORED_BYTES.get(image.mode, 4)
    per_pixel = stored * (2 if turned else 1) + _CONVERSION_BYTES.get(image.mode, 0) + _DECODER_BYTES.get(image.format or "", 0)
    return int(image.width * image.height * per_pixel * SAFETY)


class DecodeBudget:
    """A counting semaphore of bytes, shared by every decoding thread of the process."""

    def __init__(self, capacity: int = DEFAULT_DECODE_MEMORY):
        self.capacity = capacity
        self.in_use = 0
        self._condition = threading.Condition()

    @contextlib.contextmanager
    def reserve(self, cost: int, refusal: Callable[[int, int], Exception]) -> Iterator[None]:
        """Hold `cost` bytes for the block; raise ``refusal(cost, capacity)`` if it can never fit."""
        capacity = self.capacity
        if cost > capacity:
            raise refusal(cost, capacity)
        with self._condition:
            while self.in_use + cost > self.capacity and self.in_use > 0:
                self._condition.wait(timeout=0.5)
            self.in_use += cost
        try:
            yield
            if cost >= TRIM_ABOVE:
                return_freed_memory()
        finally:
            with self._condition:
                self.in_use -= cost
                self._condition.notify_all()


DECODE_MEMORY = DecodeBudget()

# After a decode this big, freed memory is handed back to the system before the next one starts:
# glibc keeps what a thread freed in that thread's arena, so decodes that took turns in different
# worker threads would otherwise each keep their peak (measured: four 13,000 x 13,000 PNGs, 1.4 GB
# instead of 0.75 GB).
TRIM_ABOVE = 64 << 20


def _malloc_trim():
    try:
        import ctypes

        return ctypes.CDLL(None).malloc_trim  # glibc; absent on macOS, Windows and musl
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def return_freed_memory() -> None:
    """Give memory freed by every thread back to the system (glibc's malloc_trim; a no-op elsewhere)."""
    if _TRIM is not None:
        _TRIM(0)


def set_decode_memory(capacity: int) -> None:
    """Set the process-wide decode memory budget, in bytes (at least 1 MB)."""
    DECODE_MEMORY.capacity = max(1 << 20, int(capacity))


def gigabytes(count: int) -> str:
    return f"{count / 2**30:.1f} GiB"
