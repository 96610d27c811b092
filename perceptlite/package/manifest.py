"""Model packages: a folder with ``perceptlite.json``, weight files and ``MODEL_CARD.md``.

The manifest is the contract between the factory (``export/``) and the runtime. See
``docs/model-package.md`` for every field. :func:`load_package` parses and validates the whole
manifest here, in one place (the ``input``, ``outputs`` and ``variants`` sections and, for a gguf
package, its ``gguf`` section with the UniPercept prompts), and checks that every listed file is
there with its listed size. A file's sha256 is checked when a backend opens it
(:meth:`ModelPackage.open_file`), so loading hashes only the files it uses; :meth:`ModelPackage.verify`
hashes them all. Any problem raises :class:`ModelPackageError` with a one-line message naming the
package and what is wrong. Nothing is unpickled: weights are ONNX or GGUF files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelPackageError, one_line
from ..records import AXES
from ..records.publish import atomic_output

MANIFEST_NAME = "perceptlite.json"
MODEL_CARD_NAME = "MODEL_CARD.md"
FORMAT_VERSION = 1
BACKENDS = ("onnx", "gguf")
RESIZE_MODES = ("stretch", "center-crop")
INTERPOLATIONS = ("bicubic", "bilinear", "lanczos", "nearest")
SCORE_TOKENS = 101  # UniPercept's score tokens aa..ey stand for the scores 0..100


@dataclass(frozen=True)
class CropSpec:
    """Native-resolution crops that a quality model reads beside the whole-image view.

    The graph's input `tensor` is float32 [N, K, 3, size, size]: K size x size crops of the
    full-resolution image (never draft-decoded), centred on the middle of the chosen `cells` of a
    rows x cols grid over the image (all cells when `cells` is None), row by row. An image with a
    side under `size` is first enlarged to it; one whose long side is over `max_side` is judged as if
    downscaled to it (the working size), its short side kept at least `size`.
    """

    size: int
    grid: tuple[int, int]  # (rows, cols)
    cells: tuple[tuple[int, int], ...] | None = None  # (row, col) of each crop, default every cell
    tensor: str = "crops"
    max_side: int | None = None  # None: crops read pixels at 100 % whatever the photo's size

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


@dataclass(frozen=True)
class GgufSpec:
    """The ``gguf`` section of a gguf package: UniPercept's projector file, chat prompts and score tokens."""

    mmproj: str  # the listed mmproj file
    system_message: str
    rating_prompts: dict[str, str]  # axis -> UniPercept's rating question
    score_token_ids: tuple[int, ...]  # the 101 token ids of aa..ey (scores 0..100)
    image_size: int = 448
    # Health check: an image whose softmax mass on the 101 score tokens (over the whole vocabulary)
    # falls below this, for any axis, gets an error record instead of scores. 0: no floor.
    min_score_mass: float = 0.0


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
    variants: dict[str, str] = field(default_factory=dict)  # selectable weight files, e.g. {"fp32": "model.onnx"}
    default_variant: str | None = None
    gguf: GgufSpec | None = None
    verify_hashes: bool = True  # open_file checks each file's sha256 (once)
    _verified: set[str] = field(default_factory=set, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

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
        """The path of a listed file (not hash-checked; see open_file)."""
        if name not in self.files:
            raise ModelPackageError(f"{self.path}: manifest lists no file {name!r}")
        return self.path / name

    def open_file(self, name: str) -> Path:
        """The path of a listed file that a backend is about to open, its sha256 checked (once per package)."""
        path = self.file(name)
        with self._lock:
            if self.verify_hashes and name not in self._verified:
                _require(sha256_file(path) == self.files[name]["sha256"], self.path, f"{name} fails its sha256 check (corrupt or replaced)")
                self._verified.add(name)
        return path

    def verify(self) -> None:
        """Check the sha256 of every listed file (``perceptlite models show``, write_package)."""
        for name in self.files:
            self.open_file(name)

    def variant_name(self, variant: str | None = None) -> str:
        """The weight variant a run uses: `variant`, else the package's default, else its first."""
        if not self.variants:
            raise ModelPackageError(f"{self.path}: manifest has no 'variants'")
        chosen = variant or self.default_variant or next(iter(self.variants))
        if chosen not in self.variants:
            raise ModelPackageError(f"{self.path}: no variant {chosen!r}; available: {', '.join(self.variants)}")
        return chosen

    def variant_file(self, variant: str | None = None) -> Path:
        """The weight file of a variant, hash-checked (it is about to be opened)."""
        return self.open_file(self.variants[self.variant_name(variant)])


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _require(condition: object, where: Path, message: str) -> None:
    """ModelPackageError(where: message) unless `condition` is true."""
    if not condition:
        raise ModelPackageError(f"{where}: {message}")


def _parse_input(raw: dict[str, Any], where: Path) -> InputSpec:
    _require(isinstance(raw, dict), where, "'input' must be an object")
    size: Any = raw.get("size")
    _require(
        isinstance(size, list) and len(size) == 2 and all(_is_int(v) and v > 0 for v in size),
        where,
        "'input.size' must be [height, width] in pixels",
    )
    resize = raw.get("resize", "stretch")
    _require(resize in RESIZE_MODES, where, f"'input.resize' must be one of {RESIZE_MODES}")
    interpolation = raw.get("interpolation", "bicubic")
    _require(interpolation in INTERPOLATIONS, where, f"'input.interpolation' must be one of {INTERPOLATIONS}")
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
    max_side = raw.get("max_side")
    _require(
        max_side is None or (isinstance(max_side, int) and not isinstance(max_side, bool) and max_side >= size),
        where,
        "'input.crops.max_side' must be an integer of at least 'input.crops.size' pixels",
    )
    cells = raw.get("cells")
    if cells is not None:
        _require(
            isinstance(cells, list)
            and cells
            and all(
                isinstance(c, list)
                and len(c) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in c)
                and 0 <= c[0] < grid[0]
                and 0 <= c[1] < grid[1]
                for c in cells
            ),
            where,
            "'input.crops.cells' must list [row, col] cells inside the grid",
        )
        cells = tuple((c[0], c[1]) for c in cells)
    return CropSpec(size=size, grid=(grid[0], grid[1]), cells=cells, tensor=tensor, max_side=max_side)


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


def _parse_gguf(raw: Any, files: dict[str, Any], axes: tuple[str, ...], where: Path) -> GgufSpec:
    _require(isinstance(raw, dict), where, "a gguf package needs a 'gguf' section in its manifest")
    for key in ("mmproj", "system_message", "rating_prompts", "score_token_ids"):
        _require(key in raw, where, f"manifest field 'gguf.{key}' is missing")
    _require(isinstance(raw["mmproj"], str) and raw["mmproj"] in files, where, "'gguf.mmproj' must name a file listed in 'files'")
    _require(isinstance(raw["system_message"], str), where, "'gguf.system_message' must be a string")
    ids = raw["score_token_ids"]
    _require(
        isinstance(ids, list) and len(ids) == SCORE_TOKENS and all(_is_int(i) and i >= 0 for i in ids),
        where,
        f"'gguf.score_token_ids' must be {SCORE_TOKENS} token ids",
    )
    prompts = raw["rating_prompts"]
    _require(
        isinstance(prompts, dict) and all(isinstance(v, str) for v in prompts.values()),
        where,
        "'gguf.rating_prompts' must map axes to questions",
    )
    missing = [axis for axis in axes if axis not in prompts]
    _require(not missing, where, f"'gguf.rating_prompts' has no question for {', '.join(missing)}")
    image_size = raw.get("image_size", 448)
    _require(_is_int(image_size) and image_size > 0, where, "'gguf.image_size' must be a positive whole number")
    floor = _number(raw.get("min_score_mass", 0.0), where, "gguf.min_score_mass")
    _require(0.0 <= floor <= 1.0, where, f"'gguf.min_score_mass' must lie in 0..1, not {floor:g}")
    return GgufSpec(raw["mmproj"], raw["system_message"], dict(prompts), tuple(ids), image_size, floor)


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


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are unique: with a repeated key, which value counts would depend on the reader."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"key {_shown(key)} appears twice in one object")
        seen[key] = value
    return seen


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    folder = Path(path)
    manifest_path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise ModelPackageError(f"{folder}: not a model package folder")
    if not manifest_path.is_file():
        raise ModelPackageError(f"{folder}: no {MANIFEST_NAME} (not a perceptlite model package)")
    if folder.resolve() not in manifest_path.resolve().parents:
        raise ModelPackageError(f"{manifest_path}: the manifest is a link out of the package; a package holds its own manifest")
    try:
        text = manifest_path.read_text(encoding="utf-8")
        raw = json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_refuse_duplicates)
    except RecursionError:
        raise ModelPackageError(f"{manifest_path}: unreadable manifest (JSON nested too deeply)") from None
    except (OSError, ValueError) as exc:  # ValueError: UnicodeDecodeError, JSONDecodeError, NaN/Infinity
        raise ModelPackageError(f"{manifest_path}: unreadable manifest ({one_line(exc)})") from None
    _require(isinstance(raw, dict), manifest_path, "manifest must be a JSON object")
    return raw


def _check_variants(raw: dict[str, Any], where: Path) -> None:
    variants = raw.get("variants", {})
    _require(isinstance(variants, dict), where, "'variants' must map variant names to listed files")
    for variant, name in variants.items():
        _require(isinstance(name, str) and name in raw["files"], where, f"variant {variant!r} must name a file listed in 'files'")
    default = raw.get("default_variant")
    _require(
        default is None or (isinstance(default, str) and default in variants),
        where,
        f"'default_variant' {_shown(default)} is not one of 'variants'",
    )


def load_package(path: str | os.PathLike, verify: bool = True) -> ModelPackage:
    """Load a model package folder: the whole manifest validated, every listed file present with
    its listed size. With `verify`, each file's sha256 is checked when a backend opens it."""
    folder = Path(path).resolve()
    raw = read_manifest(folder)
    where = folder / MANIFEST_NAME
    _require(
        raw.get("format") == FORMAT_VERSION, where, f"unsupported 'format' {raw.get('format')!r} (this perceptlite reads {FORMAT_VERSION})"
    )
    for key in ("name", "version", "backend", "files", "input", "outputs"):
        _require(key in raw, where, f"missing field '{key}'")
    for key in ("name", "version"):
        _require(isinstance(raw[key], str) and raw[key] != "", where, f"'{key}' must be a non-empty string")
    _require(raw["backend"] in BACKENDS, where, f"unknown backend {raw['backend']!r} (expected {', '.join(BACKENDS)})")
    files = raw["files"]
    _require(isinstance(files, dict) and files, where, "'files' must map file names to {sha256, bytes}")
    for name, entry in files.items():
        _require(name and "\0" not in name, where, f"file name {_shown(name)} is empty or holds a NUL character")
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
            _require(
                entry.get("bytes", size) == size,
                folder,
                f"{name} has {size} bytes, manifest says {entry.get('bytes')} (corrupt or replaced)",
            )
    _check_variants(raw, where)
    outputs = _parse_outputs(raw["outputs"], where)
    return ModelPackage(
        path=folder,
        name=str(raw["name"]),
        version=str(raw["version"]),
        backend=raw["backend"],
        files=files,
        input=_parse_input(raw["input"], where),
        outputs=outputs,
        raw=raw,
        variants=dict(raw.get("variants", {})),
        default_variant=raw.get("default_variant"),
        gguf=_parse_gguf(raw.get("gguf"), files, tuple(outputs), where) if raw["backend"] == "gguf" else None,
        verify_hashes=verify,
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
    manifest["files"] = {name: {"sha256": sha256_file(folder / name), "bytes": (folder / name).stat().st_size} for name in names}
    _atomic_write_text(folder / MODEL_CARD_NAME, model_card)
    _atomic_write_text(folder / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    load_package(folder).verify()
    return folder


def _atomic_write_text(path: Path, text: str) -> None:
    with atomic_output(path, mode=0o644) as handle:  # package files must be readable by every user
        handle.write(text)
