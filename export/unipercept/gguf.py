"""Convert a UniPercept checkpoint (InternVL layout) into a gguf model package for llama.cpp.

    python -m export.unipercept.gguf CHECKPOINT_DIR OUT_PACKAGE_DIR [--quant f16,q8_0,q4_k_m] [--default q8_0]

Steps: check the folder layout; run llama.cpp's own converter (pinned, from the llama-cpp-python
sdist, see export/unipercept/llama_cpp_source.py) for the text model (F16) and for the vision projector
(`--mmproj`, F16); quantise the text model with llama.cpp's quantiser; write the package
(`perceptlite.json` with hashes, prompts and score-token ids, MODEL_CARD.md). The checkpoint
folder is only read: the converter sees a temporary overlay of symlinks, plus a
`preprocessor_config.json` with ImageNet mean/std when the checkpoint has none.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from perceptlite.backends import vision_probe
from perceptlite.package.manifest import AXES, sha256_file, write_package

from . import llama_cpp_source
from . import reference as unipercept

QUANT_TYPES = ("f16", "q8_0", "q4_k_m")
MMPROJ_FILE = "mmproj-f16.gguf"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
IMAGE_TOKENS = ("<img>", "</img>", "<IMG_CONTEXT>")


class ConversionError(Exception):
    """A checkpoint or conversion problem; the message is one line for the user."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def variant_file(variant: str) -> str:
    return f"model-{variant}.gguf"


# -- checking the checkpoint ---------------------------------------------------------------------


def read_checkpoint_config(checkpoint: Path) -> dict[str, Any]:
    """config.json of an InternVL-layout checkpoint, or a one-line ConversionError."""
    if not checkpoint.is_dir():
        raise ConversionError(f"{checkpoint}: not a folder (expected a UniPercept checkpoint folder)")
    config_path = checkpoint / "config.json"
    if not config_path.is_file():
        raise ConversionError(f"{checkpoint}: no config.json (expected a UniPercept/InternVL checkpoint folder)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"{config_path}: unreadable JSON ({exc})") from None
    if "InternVLChatModel" not in (config.get("architectures") or []):
        raise ConversionError(
            f"{config_path}: architectures is {config.get('architectures')}, expected InternVLChatModel "
            "(UniPercept's original InternVL layout; '-hf' conversions are not supported)"
        )
    for key in ("llm_config", "vision_config"):
        if not isinstance(config.get(key), dict):
            raise ConversionError(f"{config_path}: missing '{key}' (not an InternVL checkpoint)")
    if not (config["vision_config"].get("architectures") or []):
        config["vision_config"]["architectures"] = ["InternVisionModel"]
    return config


def check_checkpoint(checkpoint: Path) -> dict[str, Any]:
    """Validate the folder layout; returns config.json."""
    config = read_checkpoint_config(checkpoint)
    if not sorted(checkpoint.glob("*.safetensors")):
        raise ConversionError(f"{checkpoint}: no *.safetensors weights (convert .bin weights to safetensors first)")
    has_tokenizer = (checkpoint / "tokenizer.json").is_file() or (
        (checkpoint / "vocab.json").is_file() and (checkpoint / "merges.txt").is_file()
    )
    if not has_tokenizer or not (checkpoint / "tokenizer_config.json").is_file():
        raise ConversionError(f"{checkpoint}: tokenizer missing (need tokenizer_config.json and tokenizer.json or vocab.json+merges.txt)")
    return config


def score_token_ids(checkpoint: Path) -> list[int]:
    """Ids of the 101 score tokens in the checkpoint's tokenizer; each must be one token."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(checkpoint), trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types
        raise ConversionError(f"{checkpoint}: the tokenizer does not load ({' '.join(str(exc).split())[:200]})") from None
    try:
        ids = [int(i) for i in unipercept.score_token_ids(tokenizer)]
    except ValueError as exc:
        raise ConversionError(f"{checkpoint}: {exc}") from None
    for text in IMAGE_TOKENS:
        if tokenizer.convert_tokens_to_ids(text) in (None, tokenizer.unk_token_id):
            raise ConversionError(f"{checkpoint}: tokenizer lacks the InternVL token {text}")
    return ids


def system_message(config: dict[str, Any]) -> str:
    """The checkpoint's system message; InternVL's default one when config.json sets none."""
    return config.get("system_message") or unipercept.DEFAULT_SYSTEM_MESSAGE


# -- running llama.cpp's tools --------------------------------------------------------------------


def make_overlay(checkpoint: Path, overlay: Path) -> None:
    """Symlink the checkpoint's files into `overlay`; add ImageNet preprocessor_config.json if absent."""
    for item in checkpoint.iterdir():
        (overlay / item.name).symlink_to(item.resolve())
    if not (checkpoint / "preprocessor_config.json").is_file():
        preprocessor = {"image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD, "crop_size": 448}
        (overlay / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))


def run_converter(overlay: Path, out_file: Path, model_name: str, mmproj: bool) -> None:
    """Run the pinned convert_hf_to_gguf.py at F16 (text model, or the vision projector)."""
    command = [
        sys.executable,
        str(llama_cpp_source.converter_script()),
        str(overlay),
        "--outfile",
        str(out_file),
        "--outtype",
        "f16",
        "--model-name",
        model_name,
    ]
    if mmproj:
        command.append("--mmproj")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(llama_cpp_source.gguf_py_dir()), env.get("PYTHONPATH")]))
    env.setdefault("NO_LOCAL_GGUF", "")
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0 or not out_file.is_file():
        lines = [line for line in (result.stderr or result.stdout).strip().splitlines() if line.strip()]
        what = "vision projector (--mmproj)" if mmproj else "text model"
        raise ConversionError(f"llama.cpp's converter failed on the {what}: {lines[-1] if lines else 'no output'}")


def quantize(source: Path, target: Path, variant: str, threads: int) -> None:
    """Quantise an F16 GGUF with llama.cpp (llama_model_quantize)."""
    from perceptlite.backends.gguf import import_llama_cpp

    llama_cpp, _ = import_llama_cpp()
    ftype = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M}[variant]
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if status != 0 or not target.is_file():
        raise ConversionError(f"{source}: llama.cpp could not quantise to {variant} (code {status})")


def put_cls_position_last(mmproj: Path) -> None:
    """Reorder the ViT's learned position embeddings to match llama.cpp's InternVL graph.

    InternViT adds position embeddings to [CLS, patch_0 .. patch_1023] (row 0 belongs to CLS).
    llama.cpp's graph (tools/mtmd/models/internvl.cpp at the pinned version) appends CLS *after*
    the patches and then adds the same rows unchanged, so every patch would get its neighbour's
    position and the image features drift (corr ~0.9 with the reference on the tiny checkpoint;
    the "InternVL3 can't see images well" symptom). Rotating the rows to [patch_0 .. patch_1023,
    CLS] makes llama.cpp compute exactly what InternViT computes.
    """
    gguf = llama_cpp_source.import_gguf()
    reader = gguf.GGUFReader(str(mmproj), "r+")
    tensors = [t for t in reader.tensors if t.name == "v.position_embd.weight"]
    if len(tensors) != 1 or tensors[0].tensor_type != gguf.GGMLQuantizationType.F32:
        raise ConversionError(f"{mmproj}: expected one F32 v.position_embd.weight tensor")
    rows = tensors[0].data.reshape(-1, int(tensors[0].shape[0]))  # (1 + patches, hidden)
    rows[:] = np.roll(np.array(rows), -1, axis=0)
    reader.data.flush()
    del reader


def reference_probe_sketch(checkpoint: Path) -> np.ndarray:
    """The probe image's feature sketch as InternViT + pixel shuffle + mlp1 compute it (torch, float32)."""
    import torch
    from PIL import Image

    encoder = unipercept.load_image_encoder(checkpoint)
    with torch.inference_mode():
        features = encoder.extract_feature(unipercept.preprocess(Image.fromarray(vision_probe.probe_pixels())))
    return vision_probe.feature_sketch(features[0].float().numpy())


def record_position_fix(mmproj: Path, checkpoint: Path) -> None:
    """Write into the mmproj what the runtime verifies at load: the row order of the position embeddings,
    the probe's reference sketch and the llama-cpp-python the rotation was made for."""
    gguf = llama_cpp_source.import_gguf()
    sketch = reference_probe_sketch(checkpoint).astype(np.float32)
    string, array, float32 = gguf.GGUFValueType.STRING, gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.FLOAT32
    rewrite_gguf_metadata(mmproj, {
        vision_probe.POSITION_ORDER_KEY: (vision_probe.POSITION_ORDER, string, None),
        vision_probe.PROBE_KEY: ([float(v) for v in sketch], array, float32),
        vision_probe.LLAMA_CPP_KEY: (llama_cpp_source.LLAMA_CPP_PYTHON_VERSION, string, None),
    })  # fmt: skip


def rewrite_gguf_metadata(path: Path, entries: dict[str, tuple[Any, Any, Any]], remove: tuple[str, ...] = ()) -> None:
    """Rewrite a GGUF file with `entries` (key -> (value, GGUFValueType, array item type or None)) set and the
    `remove` keys dropped; tensors are copied unchanged (as gguf-py's gguf_new_metadata.py does)."""
    gguf = llama_cpp_source.import_gguf()
    reader = gguf.GGUFReader(str(path))
    partial = path.with_name(path.name + ".partial")
    architecture = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(str(partial), arch=architecture, endianess=reader.endianess)
    alignment = reader.fields.get(gguf.Keys.General.ALIGNMENT)
    if alignment is not None:
        writer.data_alignment = alignment.contents()
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF.") or field.name in entries or field.name in remove:
            continue
        value_type = field.types[0]
        writer.add_key_value(
            field.name, field.contents(), value_type, sub_type=field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        )
    for key, (value, value_type, item_type) in entries.items():
        writer.add_key_value(key, value, value_type, sub_type=item_type)
    for tensor in reader.tensors:
        writer.add_tensor_info(tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()
    del reader
    os.replace(partial, path)


def read_gguf_metadata(path: Path) -> dict[str, Any]:
    """Scalar/string metadata of a GGUF file (arrays left out), read with the pinned gguf-py."""
    gguf = llama_cpp_source.import_gguf()
    reader = gguf.GGUFReader(str(path))
    metadata = {}
    for field in reader.fields.values():
        if not field.types or field.types[0] == gguf.GGUFValueType.ARRAY:
            continue
        metadata[field.name] = field.contents()
    return metadata


def text_model_vocabulary(path: Path, ids: list[int]) -> tuple[dict[str, str], list[str]]:
    """(metadata, token strings of `ids`) of a GGUF text model, read by llama.cpp (vocabulary only)."""
    from perceptlite.backends.gguf import import_llama_cpp

    llama_cpp, _ = import_llama_cpp()
    model = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        vocab = llama_cpp.llama_model_get_vocab(model.model)
        tokens = [llama_cpp.llama_vocab_get_text(vocab, i).decode("utf-8", "replace") for i in ids]
        return dict(model.metadata), tokens
    finally:
        model.close()


# -- the package ----------------------------------------------------------------------------------


def build_manifest(
    config: dict[str, Any], checkpoint: Path, ids: list[int], variants: list[str], default: str, name: str, command: str
) -> dict[str, Any]:
    files = [variant_file(v) for v in variants] + [MMPROJ_FILE]
    return {
        "name": name,
        "version": "1.0",
        "backend": "gguf",
        "description": f"UniPercept ({checkpoint.name}) for llama.cpp: GGUF text model + InternVL vision projector",
        "files": files,
        "variants": {v: variant_file(v) for v in variants},
        "default_variant": default,
        "input": {
            "size": [448, 448],
            "resize": "stretch",
            "interpolation": "bicubic",
            "draft_factor": 1.0,  # no reduced-size decode: the gguf backend always decodes at full resolution
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
        },
        "outputs": {axis: {"tensor": "expected_score", "index": i} for i, axis in enumerate(AXES)},
        "provenance": {
            "teacher": None,
            "training_data": "as the source checkpoint",
            "source_checkpoint": {
                "folder": checkpoint.name,
                "config_sha256": sha256_file(checkpoint / "config.json"),
                "weights_sha256": {p.name: sha256_file(p) for p in sorted(checkpoint.glob("*.safetensors"))},
            },
            "converter": f"llama.cpp convert_hf_to_gguf.py from llama-cpp-python=={llama_cpp_source.LLAMA_CPP_PYTHON_VERSION} (sdist)",
            "command": command,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
        "fidelity": {},
        "gguf": {
            "mmproj": MMPROJ_FILE,
            "system_message": system_message(config),
            "rating_prompts": {axis: unipercept.rating_prompt(axis) for axis in AXES},
            "score_token_ids": ids,
            "image_size": 448,
            # Also in the mmproj's own metadata, with the probe the runtime checks at load (vision_probe.py).
            "position_embedding_order": "patches, then CLS (matches llama.cpp's InternVL graph)",
            "llm_architecture": (config["llm_config"].get("architectures") or ["?"])[0],
        },
    }


def model_card(manifest: dict[str, Any], sizes: dict[str, int]) -> str:
    rows = "\n".join(f"| `{name}` | {size / 2**20:.1f} MiB |" for name, size in sizes.items())
    source = manifest["provenance"]["source_checkpoint"]["folder"]
    return f"""# {manifest["name"]}

UniPercept checkpoint `{source}` converted for llama.cpp (perceptlite's `gguf` backend).

- Text model: GGUF, variants {", ".join(manifest["variants"])} (default `{manifest["default_variant"]}`).
- Vision tower + projector: `{MMPROJ_FILE}` (F16, projector type `internvl`).
- Images are resized to 448x448 bicubic (aspect ignored) before llama.cpp sees them, so they are
  encoded as one tile of 256 image tokens, as UniPercept does.
- Scores: softmax over the 101 score tokens `aa`..`ey` at the last prompt position, expected value,
  for each of the three rating prompts (iaa, iqa, ista); the system + image prefix is evaluated once.
- Converter: {manifest["provenance"]["converter"]}.

| file | size |
|---|---|
{rows}

Fidelity against the reference scorer is measured by `tests/backends/test_gguf_parity.py` and
`bench/bench_gguf.py`; see docs/gguf.md.
"""


def convert(
    checkpoint: Path,
    out_dir: Path,
    variants: list[str],
    default: str,
    name: str | None = None,
    threads: int | None = None,
    command: str = "",
) -> Path:
    """Build a gguf model package in `out_dir` (which must not exist yet or be empty)."""
    checkpoint = checkpoint.resolve()
    config = check_checkpoint(checkpoint)
    if default not in variants:
        raise ConversionError(f"--default {default} is not among the variants {','.join(variants)}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConversionError(f"{out_dir}: already exists and is not empty; choose a new output folder")
    ids = score_token_ids(checkpoint)
    threads = threads or max(1, (os.cpu_count() or 2) // 2)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.partial-"))
    staging.chmod(0o777 & ~_umask())
    try:
        with tempfile.TemporaryDirectory(prefix="perceptlite-gguf-") as tmp:
            overlay = Path(tmp) / checkpoint.name
            overlay.mkdir()
            make_overlay(checkpoint, overlay)
            f16 = staging / variant_file("f16")
            run_converter(overlay, f16, checkpoint.name, mmproj=False)
            run_converter(overlay, staging / MMPROJ_FILE, checkpoint.name, mmproj=True)
        put_cls_position_last(staging / MMPROJ_FILE)
        record_position_fix(staging / MMPROJ_FILE, checkpoint)
        check_converted(staging, ids)
        for variant in variants:
            if variant != "f16":
                quantize(f16, staging / variant_file(variant), variant, threads)
        if "f16" not in variants:
            f16.unlink()
        manifest = build_manifest(config, checkpoint, ids, variants, default, name or f"{checkpoint.name}-gguf", command)
        sizes = {f: (staging / f).stat().st_size for f in manifest["files"]}
        write_package(staging, manifest, model_card(manifest, sizes))
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def check_converted(folder: Path, ids: list[int]) -> None:
    """The converted files say what they should: an internvl projector, the same score tokens."""
    projector = read_gguf_metadata(folder / MMPROJ_FILE).get("clip.projector_type")
    if projector != "internvl":
        raise ConversionError(f"{folder / MMPROJ_FILE}: projector type {projector!r}, expected 'internvl'")
    _, tokens = text_model_vocabulary(folder / variant_file("f16"), [ids[0], ids[-1]])
    if tokens != ["aa", "ey"]:
        raise ConversionError(f"GGUF vocabulary maps the score token ids to {tokens}, expected ['aa', 'ey']")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m export.unipercept.gguf", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="UniPercept checkpoint folder (InternVL layout, safetensors)")
    parser.add_argument("out", type=Path, help="output model package folder (must not exist or be empty)")
    parser.add_argument("--quant", default=",".join(QUANT_TYPES), help="comma-separated variants to keep: f16,q8_0,q4_k_m")
    parser.add_argument("--default", default="q8_0", help="the package's default variant")
    parser.add_argument("--name", default=None, help="package name (default: <checkpoint folder>-gguf)")
    parser.add_argument("--threads", type=int, default=None, help="quantisation threads (default: half the cores)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    variants = [v.strip().lower() for v in args.quant.split(",") if v.strip()]
    unknown = [v for v in variants if v not in QUANT_TYPES]
    if unknown or not variants:
        print(f"error: --quant accepts {', '.join(QUANT_TYPES)}; got {args.quant!r}", file=sys.stderr)
        return 2
    command = "python -m export.unipercept.gguf " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        out = convert(args.checkpoint, args.out, variants, args.default.lower(), args.name, args.threads, command)
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
