"""A step checkpoint (sharded trainer state) -> a complete checkpoint folder in the original InternVL layout.

    python -m export.train.export_step RUN/checkpoints/step-0000500 OUT [--checkpoint BASE]

Step checkpoints hold only the trained parameters and their optimizer state, in shards. This rebuilds the model in
one process on CPU: the base weights from the run's `--checkpoint` (recorded in progress.json; `--checkpoint` points
elsewhere if it moved), the trained parameters read from the shards straight into the model's own tensors, LoRA
merged, saved as model.safetensors under the original names in the checkpoint's dtype, with the base's config,
tokenizer and code. The result loads like the final model (ReferenceScorer, GGUF converter, distillation teacher).
Host memory: the float32 model plus its copy in the checkpoint's dtype (about 48 GB for 8B); no GPU, no optimizer state.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from export.train.checkpoints import load_sharded, original_weights, read_progress, write_checkpoint_folder
from export.train.policy import ModelOptions, load_trainable_model
from export.unipercept.reference import read_config

TRAINED = "trained"  # the group of the trained parameters in a step checkpoint (see Engine.save)


def export_step(step: Path, target: Path, base: Path | None = None) -> Path:
    """Write the model of step checkpoint `step` as a checkpoint folder at `target`; returns `target`."""
    progress = read_progress(step)
    base = base or Path(progress["checkpoint"])
    options = ModelOptions(tuple(progress["train"]), int(progress["lora_rank"]), progress["lora_alpha"], lora_dropout=0.0)
    model = load_trainable_model(base, options, torch.float32, "cpu")
    # Under the Policy's names (its model sits at `.model`); these tensors share storage with the model's own.
    trained = {f"model.{name}": parameter.data for name, parameter in model.named_parameters() if parameter.requires_grad}
    load_sharded({TRAINED: trained}, step)
    state = {f"model.{name}": tensor for name, tensor in model.state_dict().items()}
    write_checkpoint_folder(original_weights(state, read_config(base), options.lora_scaling), base, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.train.export_step", description=__doc__.splitlines()[0])
    parser.add_argument("step", type=Path, help="a step checkpoint folder: RUN/checkpoints/step-N")
    parser.add_argument("output", type=Path, help="folder to write the checkpoint to")
    parser.add_argument("--checkpoint", type=Path, default=None, help="the run's base checkpoint, if it moved since the run")
    args = parser.parse_args(argv)
    try:
        export_step(args.step, args.output, args.checkpoint)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
