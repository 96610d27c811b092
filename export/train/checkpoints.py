"""Resumable step checkpoints (sharded, one file per process) and checkpoint folders in the original InternVL layout.

RUN/checkpoints/step-NNNNNNN/ is a torch.distributed.checkpoint (DCP) folder: `__R_0.distcp` per rank R, holding
only that rank's shards of the trained parameters (float32) and of their AdamW state, `.metadata` (written by rank 0
once every rank's file is complete: which slice of which tensor lies where, so a run resumes on any number of
processes), and `progress.json` (the step and seed). Only tensors are stored, read back with weights-only loading, and
DCP's pickled `.metadata` is read by an unpickler that admits only its own index classes, so loading a step
checkpoint runs no code from it. No process ever holds the whole optimizer state.

The final model (RUN/ itself) is a complete checkpoint folder: the source's config, tokenizer, modeling code and
preprocessor files, plus model.safetensors under the original weight names, LoRA merged, in the checkpoint's dtype.

Both are written under a `.partial` name and renamed when complete, so a kill never leaves a half-written
checkpoint behind a valid name.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import shutil
import warnings
from pathlib import Path

import torch

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
PROGRESS = "progress.json"
LEGACY_TRAINER_STATE = "trainer_state.pt"  # the earlier whole-state format, refused on resume


def checkpoint_dtype(config: dict) -> torch.dtype:
    return getattr(torch, config.get("torch_dtype") or config["llm_config"].get("torch_dtype") or "bfloat16")


def original_weights(full_state: dict[str, torch.Tensor], config: dict, lora_scaling: float) -> dict[str, torch.Tensor]:
    """Policy state (names under `model.`, maybe with peft's LoRA layers) -> the checkpoint's own weight names.

    LoRA deltas are merged: W + scaling * B @ A for every `...base_layer.weight` that has adapters.
    """
    dtype = checkpoint_dtype(config)
    weights = {}
    for key, value in full_state.items():
        if ".lora_" in key:
            continue
        if key.endswith(".base_layer.weight"):
            stem = key[: -len(".base_layer.weight")]
            lora_a, lora_b = full_state.get(f"{stem}.lora_A.default.weight"), full_state.get(f"{stem}.lora_B.default.weight")
            if lora_a is not None and lora_b is not None:
                value = (value.float() + lora_scaling * (lora_b.float() @ lora_a.float())).to(value.dtype)
        name = key.removeprefix("model.").replace("base_model.model.", "").replace(".base_layer.", ".")
        weights[name] = value.detach().to("cpu", dtype).contiguous().clone()
    if config["llm_config"].get("tie_word_embeddings", False):
        weights.pop("language_model.lm_head.weight", None)
    return weights


def write_checkpoint_folder(weights: dict[str, torch.Tensor], source: Path, target: Path) -> None:
    """A complete checkpoint folder at `target`: the source's non-weight files + `weights` as model.safetensors."""
    from safetensors.torch import save_file

    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file() and path.name not in (*WEIGHT_FILES, PROGRESS, LEGACY_TRAINER_STATE) and not path.name.startswith("model-"):
            shutil.copy2(path, partial / path.name)
    save_file(weights, str(partial / "model.safetensors"), metadata={"format": "pt"})
    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)


def partial_step_folder(folder: Path) -> Path:
    return folder.with_name(folder.name + ".partial")


def save_sharded(state: dict[str, dict[str, torch.Tensor]], partial: Path) -> None:
    """Every rank writes its own shards of `state` into `partial` (a collective: all ranks call it)."""
    import torch.distributed.checkpoint as dcp

    with _quiet_if_one_process() as one_process:
        dcp.save(state, storage_writer=dcp.FileSystemWriter(str(partial), single_file_per_rank=True), no_dist=one_process)


def load_sharded(state: dict[str, dict[str, torch.Tensor]], folder: Path) -> None:
    """Fill `state`'s tensors (this rank's shards, whatever the world size at save) in place from `folder`."""
    import torch.distributed.checkpoint as dcp

    with _quiet_if_one_process() as one_process:
        dcp.load(state, storage_reader=_MetadataCheckingReader(str(folder)), no_dist=one_process)


def read_step_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """A step checkpoint's whole state as CPU tensors, in this one process, under flattened names
    (`trained.NAME`, `optimizer.NAME.exp_avg`...): for inspection and tests; it holds everything in memory."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    reader = _MetadataCheckingReader(str(folder))
    entries = reader.read_metadata().state_dict_metadata.items()
    state = {
        key: torch.empty(entry.size, dtype=entry.properties.dtype) for key, entry in entries if isinstance(entry, TensorStorageMetadata)
    }
    with _quiet_if_one_process():
        dcp.load(state, storage_reader=reader, no_dist=True)
    return state


# What DCP's `.metadata` pickle may name: its index classes, paths, torch.Size and dtypes, the layout decoder.
_METADATA_CLASSES = {
    ("torch.distributed.checkpoint.metadata", name)
    for name in (
        "Metadata",
        "MetadataIndex",
        "StorageMeta",
        "TensorStorageMetadata",
        "BytesStorageMetadata",
        "ChunkStorageMetadata",
        "TensorProperties",
        "_MEM_FORMAT_ENCODING",
    )
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _METADATA_CLASSES or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"checkpoint metadata names {module}.{name}, which is not part of a checkpoint index")


def _MetadataCheckingReader(path: str):  # noqa: N802  (stands for the class it builds)
    """A FileSystemReader whose `.metadata` goes through _MetadataUnpickler instead of an unrestricted pickle.load.
    Built on first use: torch.distributed.checkpoint is imported only when a checkpoint is read or written."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import StorageMeta

    class Reader(dcp.FileSystemReader):
        def read_metadata(self, *args, **kwargs):
            if kwargs.get("rank") is not None:  # per-rank metadata files: not a layout this project writes
                raise ValueError(f"{self.path}: per-rank checkpoint metadata is not supported")
            with open(Path(self.path) / ".metadata", "rb") as stream:
                metadata = _MetadataUnpickler(stream).load()
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return Reader(path)


@contextlib.contextmanager
def _quiet_if_one_process():
    """Yields whether this is one process (no process group); then DCP warns at every call that it assumes so,
    even when told: a line per checkpoint that says nothing, so it is filtered."""
    one_process = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    with warnings.catch_warnings():
        if one_process:
            warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield one_process


def finish_step(folder: Path, progress: dict, keep_last: int) -> None:
    """Rank 0, once every rank's shards are in `folder`.partial: add progress.json, rename, prune older steps."""
    partial = partial_step_folder(folder)
    (partial / PROGRESS).write_text(json.dumps(progress), encoding="utf-8")
    if folder.exists():
        shutil.rmtree(folder)
    partial.rename(folder)
    steps = sorted(p for p in folder.parent.glob("step-*[0-9]") if p.is_dir())
    for old in steps[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old)


def latest_step_folder(output: Path) -> Path | None:
    """The newest complete RUN/checkpoints/step-N folder, or None (`.partial` folders are never complete)."""
    folders = sorted(p for p in (output / "checkpoints").glob("step-*[0-9]") if p.is_dir())
    found = [p for p in folders if (p / PROGRESS).is_file()]
    if not found and any((p / LEGACY_TRAINER_STATE).is_file() for p in folders):
        # Starting over silently would throw away a long run's progress.
        raise ValueError(
            f"{output / 'checkpoints'}: step checkpoints in the old whole-state format ({LEGACY_TRAINER_STATE}); "
            "resume them with the version that wrote them"
        )
    return found[-1] if found else None


def read_progress(folder: Path) -> dict:
    return json.loads((folder / PROGRESS).read_text(encoding="utf-8"))


def publish_final(weights: dict, source: Path, output: Path) -> None:
    """Write the final checkpoint's files directly into OUTPUT (beside checkpoints/)."""
    staging = output / "final"
    write_checkpoint_folder(weights, source, staging)
    for path in staging.iterdir():
        target = output / path.name
        if target.is_dir():
            shutil.rmtree(target)
        shutil.move(str(path), target)
    staging.rmdir()
