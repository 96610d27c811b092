"""Model packages: a folder with ``perceptlite.json``, weight files and ``MODEL_CARD.md``.

The manifest is the contract between the factory (``export/``) and the runtime. See
``docs/model-package.md`` for every field. Loading verifies the schema and the sha256 of every
listed file; any problem raises :class:`ModelPackageError` with a one-line message naming the
package and what is wrong. Nothing is unpickled: weights are ONNX or GGUF files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelPackageError

MANIFEST_NAME = "perceptlite.json"
MODEL_CARD_NAME = "MODEL_CARD.md"
FORMAT_VERSION = 1
AXES = ("iaa", "iqa", "ista")
BACKENDS = ("onnx", "gguf")
RESIZE_MODES = ("stretch", "center-crop")
INTERPOLATIONS = ("bicubic", "bilinear", "lanczos", "nearest")



@dataclass(frozen=True)
class CropSpec:
    """Native-resolution crops that a quality model reads beside the whole-image view.

    The graph's input `tensor` is float32 [N, K, 3, size, size]: K size x size crops of the
    full-resolution image (never draft-decoded), centred on the middle of the chosen `cells` of a
    rows x cols grid over the image (all cells when `cells` is None), row by row. An image with a
    side under `size` is first enlarged to it.
    """

    size: int
    grid: tuple[int, int]  # (rows, cols)
    cells: tuple[tuple[int, int], ...] | None = None  # (row, col) of each crop, default every cell
    tensor: str = "crops"

    @property
    def count(self) -> int:
        return len(self.cells) if self.cells is not None else self.grid[0] * self.grid[1]


@dataclass(frozen=True)
class InputSpec:
    """How an RGB image becomes the model's input."""

    size: tuple[int, int]  # (height, width)
    resize: str = "stretch"  # "stretch" ignores aspect ratio (as UniPercept does)
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    # The decoder may use JPEG draft (DCT-domain downscaling) down to this multiple of `size`.
    draft_factor: float = 2.0
    crops: CropSpec | None = None


@dataclass(frozen=True)
class AxisOutput:
    """Where one axis comes from and how raw model output maps to 0-100: clip(scale*x + offset)."""

    tensor: str
    index: int
    scale: float = 1.0
    offset: float = 0.0


@dataclass
class ModelPackage:
    path: Path
    name: str
    version: str
    backend: str
    files: dict[str, dict[str, Any]]
    input: InputSpec
    outputs: dict[str, AxisOutput]
    raw: dict[str, Any] = field(repr=False)

    @property
    def axes(self) -> tuple[str, ...]:
        return tuple(self.outputs)

    @property
    def package_hash(self) -> str:
        """A short stable identity of the package content (used by score caches)."""
        digest = hashlib.sha256()
        for name in sorted(self.files):
            digest.update(name.encode() + b"\0" + self.files[name]["sha256"].encode() + b"\n")
        return digest.hexdigest()[:16]

    def file(self, name: str) -> Path:
        if name not in self.files:
            raise ModelPackageError(f"{self.path}: manifest lists no file {name!r}")
        return self.path / name

    @property
    def variants(self) -> dict[str, str]:
        """Selectable weight files, e.g. {"fp32": "model.onnx", "int8": "model.int8.onnx"}."""
        return dict(self.raw.get("variants", {}))

    @property
    def default_variant(self) -> str | None:
        return self.raw.get("default_variant")

    def variant_file(self, variant: str | None = None) -> Path:
        variants = self.variants
        if not variants:
            raise ModelPackageError(f"{self.path}: manifest has no 'variants'")
        chosen = variant or self.default_variant or next(iter(variants))
        if chosen not in variants:
            raise ModelPackageError(
                f"{self.path}: no variant {chosen!r}; available: {', '.join(variants)}"
            )
        return self.file(variants[chosen])


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _require(condition: bool, where: Path, message: str) -> None:
    if not condition:
        raise ModelPackageError(f"{where}: {message}")


def _parse_input(raw: dict[str, Any], where: Path) -> InputSpec:
    _require(isinstance(raw, dict), where, "'input' must be an object")
    size = raw.get("size")
    _require(
        isinstance(size, list) and len(size) == 2 and all(_is_int(v) and v > 0 for v in size),
        where,
        "'input.size' must be [height, width] in pixels",
    )
    resize = raw.get("resize", "stretch")
    _require(resize in RESIZE_MODES, where, f"'input.resize' must be one of {RESIZE_MODES}")
    interpolation = raw.get("interpolation", "bicubic")
    _require(
        interpolation in INTERPOLATIONS, where, f"'input.interpolation' must be one of {INTERPOLATIONS}"
    )
    mean = _numbers(raw.get("mean", list(InputSpec.mean)), 3, where, "input.mean")
    std = _numbers(raw.get("std", list(InputSpec.std)), 3, where, "input.std")
    _require(all(s > 0 for s in std), where, "'input.std' values must be above 0")
    draft_factor = _number(raw.get("draft_factor", 2.0), where, "input.draft_factor")
    _require(draft_factor > 0, where, "'input.draft_factor' must be above 0")
    return InputSpec(
        size=(size[0], size[1]),
        resize=resize,
        interpolation=interpolation,
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        draft_factor=draft_factor,
        crops=_parse_crops(raw["crops"], where) if raw.get("crops") is not None else None,
    )


def _parse_crops(raw: Any, where: Path) -> CropSpec:
    _require(isinstance(raw, dict), where, "'input.crops' must be an object")
    size, grid, tensor = raw.get("size"), raw.get("grid"), raw.get("tensor", "crops")
    _require(isinstance(size, int) and not isinstance(size, bool) and size > 0, where, "'input.crops.size' must be a positive integer")
    _require(
        isinstance(grid, list) and len(grid) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 8 for v in grid),
        where,
        "'input.crops.grid' must be [rows, columns], each 1-8",
    )
    _require(isinstance(tensor, str) and tensor != "", where, "'input.crops.tensor' must be a graph input name")
    cells = raw.get("cells")
    if cells is not None:
        _require(
            isinstance(cells, list) and cells and all(
                isinstance(c, list) and len(c) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in c)
                and 0 <= c[0] < grid[0] and 0 <= c[1] < grid[1] for c in cells
            ),
            where,
            "'input.crops.cells' must list [row, col] cells inside the grid",
        )
        cells = tuple((c[0], c[1]) for c in cells)
    return CropSpec(size=size, grid=(grid[0], grid[1]), cells=cells, tensor=tensor)


def _parse_outputs(raw: dict[str, Any], where: Path) -> dict[str, AxisOutput]:
    _require(isinstance(raw, dict) and raw, where, "'outputs' must map axis names to outputs")
    outputs = {}
    for axis, spec in raw.items():
        _require(axis in AXES, where, f"unknown output axis {axis!r} (expected {', '.join(AXES)})")
        _require(isinstance(spec, dict), where, f"'outputs.{axis}' must be an object")
        calibration = spec.get("calibration", {})
        _require(isinstance(calibration, dict), where, f"'outputs.{axis}.calibration' must be an object")
        tensor = spec.get("tensor", "scores")
        _require(isinstance(tensor, str) and tensor != "", where, f"'outputs.{axis}.tensor' must be a tensor name")
        index = spec.get("index", 0)
        _require(_is_int(index) and index >= 0, where, f"'outputs.{axis}.index' must be a whole number >= 0, not {_shown(index)}")
        outputs[axis] = AxisOutput(
            tensor=tensor,
            index=index,
            scale=_number(calibration.get("scale", 1.0), where, f"outputs.{axis}.calibration.scale"),
            offset=_number(calibration.get("offset", 0.0), where, f"outputs.{axis}.calibration.offset"),
        )
    return outputs


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any, where: Path, field_name: str) -> float:
    """A finite JSON number (not a string, boolean, NaN or Infinity)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    _require(ok, where, f"'{field_name}' must be a finite number, not {_shown(value)}")
    return float(value)


def _numbers(values: Any, count: int, where: Path, field_name: str) -> tuple[float, ...]:
    _require(isinstance(values, list) and len(values) == count, where, f"'{field_name}' must be a list of {count} numbers")
    return tuple(_number(v, where, field_name) for v in values)


def _shown(value: Any) -> str:
    return " ".join(repr(value).split())[:40]


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    folder = Path(path)
    manifest_path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise ModelPackageError(f"{folder}: not a model package folder")
    if not manifest_path.is_file():
        raise ModelPackageError(f"{folder}: no {MANIFEST_NAME} (not a perceptlite model package)")
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except RecursionError:
        raise ModelPackageError(f"{manifest_path}: unreadable manifest (JSON nested too deeply)") from None
    except (OSError, ValueError) as exc:  # ValueError: UnicodeDecodeError, JSONDecodeError, NaN/Infinity
        raise ModelPackageError(f"{manifest_path}: unreadable manifest ({' '.join(str(exc).split())[:200]})") from None
    _require(isinstance(raw, dict), manifest_path, "manifest must be a JSON object")
    return raw


def _check_variants(raw: dict[str, Any], where: Path) -> None:
    variants = raw.get("variants", {})
    _require(isinstance(variants, dict), where, "'variants' must map variant names to listed files")
    for variant, name in variants.items():
        _require(isinstance(name, str) and name in raw["files"], where, f"variant {variant!r} must name a file listed in 'files'")
    default = raw.get("default_variant")
    _require(default is None or default in variants, where, f"'default_variant' {_shown(default)} is not one of 'variants'")


def load_package(path: str | os.PathLike, verify: bool = True) -> ModelPackage:
    """Load and check a model package folder. `verify` checks every file's size and sha256."""
    folder = Path(path).resolve()
    raw = read_manifest(folder)
    where = folder / MANIFEST_NAME
    _require(raw.get("format") == FORMAT_VERSION, where, f"unsupported 'format' {raw.get('format')!r} (this perceptlite reads {FORMAT_VERSION})")
    for key in ("name", "version", "backend", "files", "input", "outputs"):
        _require(key in raw, where, f"missing field '{key}'")
    for key in ("name", "version"):
        _require(isinstance(raw[key], str) and raw[key] != "", where, f"'{key}' must be a non-empty string")
    _require(raw["backend"] in BACKENDS, where, f"unknown backend {raw['backend']!r} (expected {', '.join(BACKENDS)})")
    files = raw["files"]
    _require(isinstance(files, dict) and files, where, "'files' must map file names to {sha256, bytes}")
    for name, entry in files.items():
        _require(
            isinstance(entry, dict) and isinstance(entry.get("sha256"), str),
            where,
            f"'files.{name}' needs a sha256",
        )
        _require("bytes" not in entry or _is_int(entry["bytes"]), where, f"'files.{name}.bytes' must be a whole number")
        target = (folder / name).resolve()
        _require(folder in target.parents, where, f"file {name!r} points outside the package")
        _require(target.is_file(), folder, f"missing file {name}")
        if verify:
            size = target.stat().st_size
            _require(entry.get("bytes", size) == size, folder, f"{name} has {size} bytes, manifest says {entry.get('bytes')} (corrupt or replaced)")
            _require(sha256_file(target) == entry["sha256"], folder, f"{name} fails its sha256 check (corrupt or replaced)")
    _check_variants(raw, where)
    return ModelPackage(
        path=folder,
        name=str(raw["name"]),
        version=str(raw["version"]),
        backend=raw["backend"],
        files=files,
        input=_parse_input(raw["input"], where),
        outputs=_parse_outputs(raw["outputs"], where),
        raw=raw,
    )


def write_package(folder: str | os.PathLike, manifest: dict[str, Any], model_card: str) -> Path:
    """Finish a package whose weight files already sit in `folder`.

    Fills in `format` and the sha256/bytes of every file named in ``manifest["files"]`` (a list of
    names or a dict), then writes ``perceptlite.json`` and ``MODEL_CARD.md`` atomically and checks
    that the result loads.
    """
    folder = Path(folder)
    names = list(manifest["files"])
    manifest = dict(manifest)
    manifest["format"] = FORMAT_VERSION
    manifest["files"] = {
        name: {"sha256": sha256_file(folder / name), "bytes": (folder / name).stat().st_size}
        for name in names
    }
    _atomic_write_text(folder / MODEL_CARD_NAME, model_card)
    _atomic_write_text(folder / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    load_package(folder)
    return folder


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; package files must be readable by every user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
