"""Checkpoint folders in the original InternVL layout, and the resumable trainer state next to them.

RUN/checkpoints/step-NNNNNNN/ is a complete checkpoint folder (the source's config, tokenizer, modeling code and
preprocessor files, plus model.safetensors under the original weight names, LoRA merged, in the checkpoint's
dtype) and `trainer_state.pt`: the trained parameters (float32), the optimizer and scheduler state and the step,
as plain tensors and numbers, read back with `torch.load(weights_only=True)`. Folders are written under a
`.partial` name and renamed when complete, so a kill never leaves a half-written checkpoint behind a valid name.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TRAINER_STATE = "trainer_state.pt"


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
        if path.is_file() and path.name not in WEIGHT_FILES and not path.name.startswith("model-") and path.name != TRAINER_STATE:
            shutil.copy2(path, partial / path.name)
    save_file(weights, str(partial / "model.safetensors"), metadata={"format": "pt"})
    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)


def save_step(folder: Path, weights: dict, source: Path, trainer_state: dict, keep_last: int) -> None:
    """RUN/checkpoints/step-N: the checkpoint folder with trainer_state.pt inside; prune older step folders."""
    partial_state = folder.parent / f"{folder.name}.{TRAINER_STATE}.partial"
    write_checkpoint_folder(weights, source, folder)
    torch.save(trainer_state, partial_state)
    partial_state.rename(folder / TRAINER_STATE)
    steps = sorted(p for p in folder.parent.glob("step-*[0-9]") if p.is_dir())
    for old in steps[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old)


def latest_step_folder(output: Path) -> Path | None:
    """The newest RUN/checkpoints/step-N folder that has its trainer state, or None."""
    found = sorted(p for p in (output / "checkpoints").glob("step-*[0-9]") if (p / TRAINER_STATE).is_file())
    return found[-1] if found else None


def read_trainer_state(folder: Path) -> dict:
    return torch.load(folder / TRAINER_STATE, map_location="cpu", weights_only=True)


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
