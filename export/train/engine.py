"""What both stages share: options, model set-up (one process or FSDP), the step loop, checkpoints and resuming.

A stage supplies `train_step(engine, step, samples) -> metrics` (lists of values under the names in its
`metric_names`): it runs forward/backward passes and optimizer steps for this process's share of the step's
samples. The engine deals the samples out, logs, saves and resumes.
"""

from __future__ import annotations

import copy
import math
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from export.train.checkpoints import (
    finish_step,
    latest_step_folder,
    load_sharded,
    original_weights,
    partial_step_folder,
    publish_final,
    read_progress,
    save_sharded,
)
from export.train.data import DatasetSpec, Mixture
from export.train.policy import ModelOptions, Policy, Prompts, load_trainable_model, only_lora_trains
from export.train.runtime import Runtime
from export.unipercept.reference import preprocess, read_config


@dataclass
class TrainOptions:
    """Options of a run (stage 1 uses `sigma`; stage 2 adds its own on top, see export/train/grpo.py)."""

    checkpoint: Path
    output: Path
    datasets: list[DatasetSpec]
    steps: int = 1000
    batch_size: int = 4
    grad_accum: int = 4
    lr: float = 1e-5
    weight_decay: float = 0.0
    warmup: int = 50
    sigma: float = 0.0  # stage 1's rating target: 0 = one-hot on the score token, as the paper trains
    train: tuple[str, ...] = ("mlp1", "llm")
    lora_rank: int = 0
    lora_alpha: int | None = None
    device: str = "cpu"
    bf16: bool | None = None
    gradient_checkpointing: bool = False
    save_every: int = 500
    keep_last: int = 2
    resume: bool = False
    seed: int = 0
    workers: int = 2
    log_every: int = 10
    updates_per_step: int = 1  # optimizer steps per data step (GRPO's inner updates on one batch of rollouts)

    def model_options(self, lora_dropout: float) -> ModelOptions:
        return ModelOptions(self.train, self.lora_rank, self.lora_alpha, lora_dropout, self.gradient_checkpointing)


def load_pixels(samples, workers: int) -> torch.Tensor:
    """(N, 3, 448, 448) float32 pixels of the samples' images, decoded by `workers` threads."""
    if workers > 0 and len(samples) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return torch.cat(list(pool.map(lambda s: preprocess(s.image), samples)))
    return torch.cat([preprocess(s.image) for s in samples])


class Engine:
    """The model (maybe FSDP-sharded), its optimizer and schedule, the data mixture and the run folder."""

    def __init__(self, options: TrainOptions, lora_dropout: float = 0.05, needs_reference: bool = False):
        self.options = options
        self.mixture = Mixture(options.datasets, options.seed)  # first: a bad data file fails before the model loads
        self.runtime = Runtime.start(options.device)
        self.device = self.runtime.device
        torch.manual_seed(options.seed)
        self.config = read_config(options.checkpoint)
        self.use_bf16 = options.bf16 if options.bf16 is not None else self.device.type == "cuda"
        # One process: a LoRA run keeps the frozen base in bf16. FSDP: float32 master shards, bf16 compute.
        bf16_weights = self.use_bf16 and options.lora_rank > 0 and not self.runtime.distributed
        self.compute_dtype = torch.bfloat16 if bf16_weights else torch.float32
        self.model_options = options.model_options(lora_dropout)
        model = load_trainable_model(options.checkpoint, self.model_options, self.compute_dtype, str(self.device))
        self.prompts = Prompts(options.checkpoint, int(model.num_image_token))
        self.reference = None
        if needs_reference and not only_lora_trains(model):
            self.reference = self._frozen_copy(model)
        self.policy = self.runtime.shard(Policy(model, self.prompts.img_context_id), self.use_bf16)
        self.trainable_names = [name for name, p in self.policy.named_parameters() if p.requires_grad]
        self.trainable = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=options.lr, weight_decay=options.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._schedule)
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16 and not self.runtime.distributed)
        self.per_step = options.batch_size * options.grad_accum * self.runtime.world

    def _frozen_copy(self, model) -> Policy:
        """The reference policy when full weights train: a frozen copy (sharded like the policy under FSDP)."""
        reference = Policy(copy.deepcopy(model), self.prompts.img_context_id).eval()
        reference.requires_grad_(False)
        return self.runtime.shard(reference, self.use_bf16)

    def _schedule(self, update: int) -> float:
        total = self.options.steps * self.options.updates_per_step
        if update < self.options.warmup:
            return (update + 1) / max(1, self.options.warmup)
        progress = (update - self.options.warmup) / max(1, total - self.options.warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    # -- steps -----------------------------------------------------------------------------------------------

    def optimizer_step(self) -> float:
        """Clip, step, schedule, clear; returns the gradient norm before clipping."""
        norm = torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def micro_batches(self, samples: list) -> list[list]:
        size = self.options.batch_size
        return [samples[i : i + size] for i in range(0, len(samples), size)]

    def pixels(self, samples) -> torch.Tensor:
        return load_pixels(samples, self.options.workers).to(self.device, self.compute_dtype)

    def run(self, stage) -> Path:
        """Train `stage` from the start or the newest step checkpoint; returns the output folder."""
        options, runtime = self.options, self.runtime
        if self.per_step % runtime.world:
            raise ValueError("batch size x grad accum x processes must split evenly over processes")
        step = self.resume() if options.resume else 0
        options.output.mkdir(parents=True, exist_ok=True)
        runtime.log(
            f"{type(stage).__name__}: {options.steps} steps of {self.per_step} samples on {runtime.world} "
            f"process(es); one epoch = {self.mixture.epoch_length} samples {self.mixture.counts()}"
        )
        started, window = time.time(), {}
        while step < options.steps:
            samples = self.mixture.step_samples(step, self.per_step)
            metrics = stage.train_step(self, step, runtime.my_share(samples))
            step += 1
            for key, values in metrics.items():
                window.setdefault(key, []).extend(values)
            if step % options.log_every == 0 or step == options.steps:
                shown = "  ".join(f"{key} {value:.4f}" for key, value in runtime.means(window, stage.metric_names).items())
                runtime.log(f"step {step}/{options.steps}  {shown}  lr {self.scheduler.get_last_lr()[0]:.2e}  {time.time() - started:.0f}s")
                window = {}
            if options.save_every > 0 and (step % options.save_every == 0 or step == options.steps):
                self.save(step)
        self.policy.eval()
        weights = self.original_weights()
        if runtime.main:
            publish_final(weights, options.checkpoint, options.output)
        runtime.barrier()
        runtime.stop()
        return options.output

    # -- checkpoints -----------------------------------------------------------------------------------------

    def original_weights(self) -> dict:
        full = self.runtime.full_state(self.policy)
        return original_weights(full, self.config, self.model_options.lora_scaling) if self.runtime.main else {}

    def save(self, step: int) -> None:
        """RUN/checkpoints/step-N: every rank writes its own shards (all ranks take part); rank 0 completes it."""
        folder = self.options.output / "checkpoints" / f"step-{step:07d}"
        if self.runtime.main:  # left by a killed save of the same step
            shutil.rmtree(partial_step_folder(folder), ignore_errors=True)
        self.runtime.barrier()
        state, _ = self.runtime.trained_state(self.policy, self.optimizer, self.trainable_names)
        save_sharded(state, partial_step_folder(folder))
        self.runtime.barrier()
        if self.runtime.main:
            # What export.train.export_step needs to rebuild the model the shards belong to, besides the step.
            progress = {
                "step": step,
                "seed": self.options.seed,
                "processes": self.runtime.world,
                "checkpoint": str(self.options.checkpoint.resolve()),
                "train": list(self.model_options.train),
                "lora_rank": self.model_options.lora_rank,
                "lora_alpha": self.model_options.lora_alpha,
            }
            finish_step(folder, progress, self.options.keep_last)
        self.runtime.barrier()

    def resume(self) -> int:
        """Load the newest step checkpoint into this rank's shards (if any); returns the step to continue from."""
        folder = latest_step_folder(self.options.output)
        if folder is None:
            return 0
        state, groups = self.runtime.trained_state(self.policy, self.optimizer, self.trainable_names)
        load_sharded(state, folder)
        self.runtime.set_trained_state(self.policy, self.optimizer, state, groups)
        progress = read_progress(folder)
        step = int(progress["step"])
        self._set_lr(step * self.options.updates_per_step)
        self.runtime.log(f"resumed from {folder} (written by {progress['processes']} process(es)) at step {step}")
        return step

    def _set_lr(self, update: int) -> None:
        """Put the schedule where `update` optimizer steps have left it."""
        self.scheduler.last_epoch = update
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base * self._schedule(update)
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]
