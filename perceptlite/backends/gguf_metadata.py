"""Read the key-value metadata of a GGUF file (its header only), without llama.cpp or gguf-py.

The format (GGUF v2/v3, little-endian): magic ``GGUF``, version (u32), tensor count and key count (u64),
then per key its name (u64 length + UTF-8), its value type (u32) and the value; an array is its item
type (u32), its length (u64) and the items.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

GGUF_MAGIC = b"GGUF"
_STRING, _ARRAY = 8, 9
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_ARRAY_DTYPES = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8", 12: "<f8"}
_MAX_KEYS = 1 << 20  # far above what any converter writes; a larger count means a damaged header


class GgufMetadataError(ValueError):
    """A file whose GGUF header cannot be read; the message names the file."""


def read_gguf_metadata(path: str | Path) -> dict[str, Any]:
    """Every key of the file's header: scalars as Python values, strings as str, arrays as lists or numpy arrays."""
    path = Path(path)
    with open(path, "rb") as handle:
        try:
            return _read_header(handle, path)
        except struct.error:
            raise GgufMetadataError(f"{path}: the GGUF header ends early") from None


def _read_header(handle: BinaryIO, path: Path) -> dict[str, Any]:
    if handle.read(4) != GGUF_MAGIC:
        raise GgufMetadataError(f"{path}: not a GGUF file")
    (version,) = _unpack(handle, "<I")
    if version not in (2, 3):
        raise GgufMetadataError(f"{path}: GGUF version {version} is not supported (2 or 3; a big-endian file reads as neither)")
    _tensors, keys = _unpack(handle, "<QQ")
    if keys > _MAX_KEYS:
        raise GgufMetadataError(f"{path}: the GGUF header claims {keys} keys")
    metadata = {}
    for _ in range(keys):
        name = _read_string(handle)
        (value_type,) = _unpack(handle, "<I")
        metadata[name] = _read_value(handle, value_type, path)
    return metadata


def _unpack(handle: BinaryIO, layout: str) -> tuple:
    return struct.unpack(layout, handle.read(struct.calcsize(layout)))


def _read_string(handle: BinaryIO) -> str:
    (length,) = _unpack(handle, "<Q")
    return handle.read(length).decode("utf-8", "replace")


def _read_value(handle: BinaryIO, value_type: int, path: Path) -> Any:
    if value_type in _SCALARS:
        return _unpack(handle, _SCALARS[value_type])[0]
    if value_type == _STRING:
        return _read_string(handle)
    if value_type != _ARRAY:
        raise GgufMetadataError(f"{path}: unknown GGUF value type {value_type}")
    item_type, count = _unpack(handle, "<IQ")
    if item_type in _ARRAY_DTYPES:
        dtype = np.dtype(_ARRAY_DTYPES[item_type])
        return np.frombuffer(handle.read(dtype.itemsize * count), dtype=dtype, count=count).copy()
    return [_read_value(handle, item_type, path) for _ in range(count)]
