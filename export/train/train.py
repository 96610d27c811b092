"""Supervised fine-tuning of a UniPercept checkpoint (InternVL original layout) on Visual Rating data.

    python -m export.train.train --checkpoint CKPT --output RUN \\
        --dataset json=koniq_train.json,images=/data/koniq,axis=iqa,min=0,max=100 \\
        --dataset json=ava_train.json,images=/data/ava,axis=iaa,min=1,max=10 [--lora-rank 64] [--resume]

Each sample is UniPercept's rating prompt for its axis; the loss is the cross-entropy at the answer position
between the model's distribution and a soft label: a discretised Gaussian over the 101 score tokens around the
target score (per-dataset rescaled to 0-100). Checkpoints (RUN/checkpoints/step-N/, and the final model in RUN/)
are complete checkpoint folders in the original layout, so the scorer, the GGUF converter and this script read
them like the original. See export/train/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from export.unipercept import (
    AXES,
    DEFAULT_SYSTEM_MESSAGE,
    IMG_CONTEXT_TOKEN,
    build_prompt,
    expected_score,
    load_internvl,
    preprocess,
    rating_prompt,
    read_config,
    score_token_ids,
)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class DatasetSpec:
    """One VR-format JSON file, its image folder, the axis it rates and its score range (mapped to 0-100)."""

    json: Path
    images: Path
    axis: str
    low: float | None = None
    high: float | None = None
    weight: float = 1.0

    @classmethod
    def parse(cls, text: str) -> "DatasetSpec":
        """Parse 'json=FILE,images=DIR,axis=iqa[,min=1,max=5][,weight=1]'."""
        fields = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
        missing = [key for key in ("json", "images", "axis") if key not in fields]
        if missing:
            raise ValueError(f"--dataset {text!r}: missing {', '.join(missing)} (json=FILE,images=DIR,axis=iaa|iqa|ista)")
        if fields["axis"] not in AXES:
            raise ValueError(f"--dataset {text!r}: axis must be one of {', '.join(AXES)}")
        low, high = fields.get("min"), fields.get("max")
        return cls(Path(fields["json"]), Path(fields["images"]), fields["axis"],
                   float(low) if low is not None else None, float(high) if high is not None else None,
                   float(fields.get("weight", 1.0)))


@dataclass
class Sample:
    image: Path
    axis: str
    target: float  # 0-100


def load_samples(spec: DatasetSpec) -> list[Sample]:
    """Read a VR JSON list of {"image", "gt_score"} and rescale its scores linearly to 0-100."""
    if not spec.json.is_file():
        raise FileNotFoundError(f"{spec.json}: not found; pass a VR-format JSON file")
    records = json.loads(spec.json.read_text(encoding="utf-8"))
    scores = [float(r["gt_score"]) for r in records]
    low = spec.low if spec.low is not None else min(scores)
    high = spec.high if spec.high is not None else max(scores)
    if high <= low:
        raise ValueError(f"{spec.json}: score range {low}..{high} is empty; pass min= and max=")
    samples = []
    for record, score in zip(records, scores):
        target = min(100.0, max(0.0, (score - low) / (high - low) * 100.0))
        samples.append(Sample(spec.images / record["image"], spec.axis, target))
    repeat = max(1, round(spec.weight))  # integer oversampling keeps the data order simple and resumable
    return samples * repeat


def soft_label(target: float, sigma: float) -> torch.Tensor:
    """Discretised Gaussian over scores 0..100 centred at `target` (one-hot when sigma is 0)."""
    scores = torch.arange(101, dtype=torch.float32)
    if sigma <= 0:
        label = torch.zeros(101)
        label[int(round(target))] = 1.0
        return label
    weights = torch.exp(-0.5 * ((scores - target) / sigma) ** 2)
    return weights / weights.sum()


@dataclass
class TrainOptions:
    checkpoint: Path
    output: Path
    datasets: list[DatasetSpec]
    steps: int = 1000
    batch_size: int = 4
    grad_accum: int = 4
    lr: float = 1e-5
    weight_decay: float = 0.0
    warmup: int = 50
    sigma: float = 2.0
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
    trust_checkpoint_code: bool | None = None  # let an auto_map checkpoint run its own modelling code


class RatingPrompts:
    """Token ids of each axis' full rating prompt and the 101 score-token ids, from the checkpoint's tokenizer."""

    def __init__(self, checkpoint: Path, num_image_tokens: int, device: torch.device):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(checkpoint), local_files_only=True)
        system = read_config(checkpoint).get("system_message") or DEFAULT_SYSTEM_MESSAGE
        self.ids = {
            axis: torch.tensor(tokenizer.encode(build_prompt(system, rating_prompt(axis), num_image_tokens), add_special_tokens=False), device=device)
            for axis in AXES
        }
        self.score_ids = torch.tensor(score_token_ids(tokenizer), device=device)
        self.img_context_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)


def rating_logits(model, prompts: RatingPrompts, pixel_values: torch.Tensor, axis: str) -> torch.Tensor:
    """Full-vocabulary logits at the answer position of `axis`' rating prompt, for a batch of images."""
    image_embeds = model.extract_feature(pixel_values)
    ids = prompts.ids[axis].unsqueeze(0).expand(pixel_values.shape[0], -1)
    embeds = model.language_model.get_input_embeddings()(ids)
    mask = (ids == prompts.img_context_id).unsqueeze(-1)
    embeds = embeds.masked_scatter(mask, image_embeds.to(embeds.dtype).reshape(-1))
    output = model.language_model(inputs_embeds=embeds, use_cache=False, logits_to_keep=1)
    return output.logits[:, -1].float()


def batch_loss(model, prompts: RatingPrompts, batch: list[tuple[torch.Tensor, Sample]], sigma: float, device, dtype):
    """Soft-label cross-entropy summed over the batch, plus the predicted scores (for logging)."""
    total = torch.zeros((), device=device)
    predictions, targets = [], []
    for axis in AXES:
        group = [(pixels, sample) for pixels, sample in batch if sample.axis == axis]
        if not group:
            continue
        pixel_values = torch.cat([pixels for pixels, _ in group]).to(device, dtype)
        log_probs = torch.log_softmax(rating_logits(model, prompts, pixel_values, axis), dim=-1)
        labels = torch.stack([soft_label(sample.target, sigma) for _, sample in group]).to(device)
        total = total - (labels * log_probs[:, prompts.score_ids]).sum()
        predictions += expected_score(log_probs[:, prompts.score_ids].detach()).tolist()
        targets += [sample.target for _, sample in group]
    return total, predictions, targets


class SampleImages(torch.utils.data.Dataset):
    def __init__(self, samples: list[Sample]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        return preprocess(self.samples[index].image), self.samples[index]


def _order(count: int, seed: int, epoch: int) -> list[int]:
    order = list(range(count))
    random.Random(seed * 100003 + epoch).shuffle(order)
    return order


def prepare_model(options: TrainOptions, device: torch.device, load_dtype: torch.dtype):
    """Load the checkpoint, freeze what is not trained, add LoRA to the LLM if asked."""
    model = load_internvl(options.checkpoint, dtype=load_dtype, device=str(device), trust_checkpoint_code=options.trust_checkpoint_code)
    model.train()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    language_model = model.language_model
    if options.gradient_checkpointing:
        language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.vision_model.encoder.gradient_checkpointing = True
    language_model.config.use_cache = False
    if "vision" in options.train:
        for parameter in model.vision_model.parameters():
            parameter.requires_grad_(True)
    if "mlp1" in options.train:
        for parameter in model.mlp1.parameters():
            parameter.requires_grad_(True)
    if "llm" in options.train:
        if options.lora_rank > 0:
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(r=options.lora_rank, lora_alpha=options.lora_alpha or 2 * options.lora_rank,
                              lora_dropout=0.05, target_modules=LORA_TARGETS)
            model.language_model = get_peft_model(language_model, lora)
            for name, parameter in model.language_model.named_parameters():
                if "lora_" in name:
                    parameter.data = parameter.data.float()  # adapters train in float32 on a bf16 base
        else:
            for parameter in language_model.parameters():
                parameter.requires_grad_(True)
    if "llm-layers" in options.train:  # the decoder layers and final norm only: no vocabulary-sized matrices
        for name, parameter in language_model.named_parameters():
            if "embed_tokens" not in name and "lm_head" not in name:
                parameter.requires_grad_(True)
    return model


def original_state_dict(model, config: dict, dtype: torch.dtype) -> dict:
    """The model's weights under the checkpoint's original names, LoRA deltas merged in (model left untouched)."""
    lora_modules = {name: module for name, module in model.named_modules()
                    if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer")}
    state = {}
    for key, value in model.state_dict().items():
        if ".lora_" in key:
            continue
        if ".base_layer." in key:
            module_name = key.rsplit(".base_layer.", 1)[0]
            if key.endswith(".weight") and module_name in lora_modules:
                value = value + lora_modules[module_name].get_delta_weight("default").to(value.dtype)
            key = key.replace(".base_layer.", ".")
        state[key.replace("base_model.model.", "")] = value.detach().to("cpu", dtype).contiguous().clone()
    if config["llm_config"].get("tie_word_embeddings", False):
        state.pop("language_model.lm_head.weight", None)
    return state


def save_model(model, source: Path, target: Path) -> None:
    """Write a complete checkpoint folder in the original layout: source's files + the current weights."""
    from safetensors.torch import save_file

    config = read_config(source)
    dtype = getattr(torch, config.get("torch_dtype") or config["llm_config"].get("torch_dtype") or "bfloat16")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file() and path.name not in WEIGHT_FILES and not path.name.startswith("model-") and path.name != "trainer_state.pt":
            shutil.copy2(path, partial / path.name)
    save_file(original_state_dict(model, config, dtype), str(partial / "model.safetensors"), metadata={"format": "pt"})
    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)


def _trainable_state(model) -> dict:
    return {name: p.detach().float().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(model, optimizer, scheduler, options: TrainOptions, step: int) -> Path:
    """RUN/checkpoints/step-N/: a loadable checkpoint folder + trainer_state.pt to resume from."""
    folder = options.output / "checkpoints" / f"step-{step:07d}"
    save_model(model, options.checkpoint, folder)
    state = {"step": step, "trainable": _trainable_state(model), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "options": {"seed": options.seed, "lora_rank": options.lora_rank}}
    torch.save(state, folder / "trainer_state.pt")
    checkpoints = sorted((options.output / "checkpoints").glob("step-*[0-9]"))
    for old in checkpoints[: -options.keep_last] if options.keep_last > 0 else []:
        shutil.rmtree(old)
    return folder


def latest_checkpoint(output: Path) -> Path | None:
    """The newest complete RUN/checkpoints/step-N folder, or None."""
    found = sorted(p for p in (output / "checkpoints").glob("step-*[0-9]") if (p / "trainer_state.pt").is_file())
    return found[-1] if found else None


def run_training(options: TrainOptions) -> Path:
    """Train as `options` says; returns the output folder, which then holds the final checkpoint."""
    torch.manual_seed(options.seed)
    device = torch.device(options.device)
    use_bf16 = options.bf16 if options.bf16 is not None else device.type == "cuda"
    # Full fine-tuning keeps float32 master weights; a LoRA run keeps the frozen base in bf16 on GPU.
    load_dtype = torch.bfloat16 if (use_bf16 and options.lora_rank > 0) else torch.float32
    model = prepare_model(options, device, load_dtype)
    prompts = RatingPrompts(options.checkpoint, int(model.num_image_token), device)
    samples = [s for spec in options.datasets for s in load_samples(spec)]
    if not samples:
        raise ValueError("no training samples: the --dataset files are empty")
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=options.lr, weight_decay=options.weight_decay)

    def schedule(step: int) -> float:
        if step < options.warmup:
            return (step + 1) / max(1, options.warmup)
        progress = (step - options.warmup) / max(1, options.steps - options.warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    step = 0
    resume_from = latest_checkpoint(options.output) if options.resume else None
    if resume_from is not None:
        state = torch.load(resume_from / "trainer_state.pt", map_location="cpu", weights_only=True)  # tensors and numbers only: nothing executable
        parameters = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in state["trainable"].items():
                parameters[name].copy_(value)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = state["step"]
        print(f"resumed from {resume_from} at step {step}", file=sys.stderr)
    options.output.mkdir(parents=True, exist_ok=True)

    per_step = options.batch_size * options.grad_accum
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)
    dataset = SampleImages(samples)
    started, window = time.time(), []
    while step < options.steps:
        # Sample k of step s is position (s * per_step + k) of a seeded per-epoch order: resumable exactly.
        epoch, offset = divmod(step * per_step, len(samples))
        order = _order(len(samples), options.seed, epoch)[offset:]
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(dataset, order), batch_size=options.batch_size, num_workers=options.workers,
            collate_fn=lambda items: items,
        )
        batches = iter(loader)
        while step < options.steps:
            optimizer.zero_grad(set_to_none=True)
            predictions, targets = [], []
            exhausted = False
            for _ in range(options.grad_accum):
                batch = next(batches, None)
                if batch is None:
                    exhausted = True
                    break
                with autocast:
                    loss, batch_predictions, batch_targets = batch_loss(model, prompts, batch, options.sigma, device, load_dtype)
                (loss / per_step).backward()
                predictions += batch_predictions
                targets += batch_targets
            if not predictions:
                break
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            window += [abs(p - t) for p, t in zip(predictions, targets)]
            if step % options.log_every == 0 or step == options.steps:
                print(f"step {step}/{options.steps}  mean |score - target| {sum(window) / len(window):.2f}  "
                      f"lr {scheduler.get_last_lr()[0]:.2e}  {time.time() - started:.0f}s", file=sys.stderr)
                window = []
            if options.save_every > 0 and (step % options.save_every == 0 or step == options.steps):
                save_checkpoint(model, optimizer, scheduler, options, step)
            if exhausted:
                break
    model.eval()
    save_model(model, options.checkpoint, options.output / "final")
    for path in (options.output / "final").iterdir():
        target = options.output / path.name
        if target.is_dir():
            shutil.rmtree(target)
        shutil.move(str(path), target)
    (options.output / "final").rmdir()
    return options.output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.train.train", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint folder to start from (original InternVL layout)")
    parser.add_argument("--output", type=Path, required=True, help="run folder: checkpoints/step-N/ and the final checkpoint")
    parser.add_argument("--dataset", action="append", required=True, help="json=FILE,images=DIR,axis=iaa|iqa|ista[,min=LO,max=HI][,weight=N] (repeat)")
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    parser.add_argument("--grad-accum", type=int, default=4, help="forward passes per optimizer step")
    parser.add_argument("--lr", type=float, default=1e-5, help="peak learning rate (cosine schedule after warm-up)")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    parser.add_argument("--warmup", type=int, default=50, help="linear warm-up steps")
    parser.add_argument("--sigma", type=float, default=2.0, help="soft-label width in score points (0 = one-hot)")
    parser.add_argument("--train", default="mlp1,llm", help="parts to train: comma list of vision, mlp1, llm (or llm-layers: without embeddings/lm_head)")
    parser.add_argument("--lora-rank", type=int, default=0, help="LoRA rank for the LLM (0 = full fine-tuning); needs peft")
    parser.add_argument("--lora-alpha", type=int, default=None, help="LoRA alpha (default 2 x rank)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    parser.add_argument("--no-bf16", action="store_true", help="train in float32 even on GPU")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations to save memory")
    parser.add_argument("--save-every", type=int, default=500, help="write a resumable checkpoint every N steps (0 = only the final)")
    parser.add_argument("--keep-last", type=int, default=2, help="how many step checkpoints to keep")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output")
    parser.add_argument("--seed", type=int, default=0, help="seed for the data order")
    parser.add_argument("--workers", type=int, default=2, help="image decoding worker processes")
    parser.add_argument("--trust-checkpoint-code", action="store_true", help="allow a checkpoint with auto_map to run its own Python modelling code")
    parser.add_argument("--log-every", type=int, default=10, help="print progress every N steps")
    args = parser.parse_args(argv)
    try:
        if args.output.exists() and any(args.output.iterdir()) and not args.resume:
            raise ValueError(f"{args.output}: folder is not empty; pass --resume to continue or choose a new folder")
        options = TrainOptions(
            checkpoint=args.checkpoint, output=args.output, datasets=[DatasetSpec.parse(d) for d in args.dataset],
            steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
            weight_decay=args.weight_decay, warmup=args.warmup, sigma=args.sigma,
            train=tuple(p.strip() for p in args.train.split(",") if p.strip()), lora_rank=args.lora_rank,
            lora_alpha=args.lora_alpha, device=args.device, bf16=False if args.no_bf16 else None,
            gradient_checkpointing=args.gradient_checkpointing, save_every=args.save_every, keep_last=args.keep_last,
            resume=args.resume, seed=args.seed, workers=args.workers, log_every=args.log_every,
            trust_checkpoint_code=args.trust_checkpoint_code or None,
        )
        read_config(options.checkpoint)
        run_training(options)
    except (OSError, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
