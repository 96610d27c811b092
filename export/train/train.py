"""Stage 1, domain-adaptive pre-training: supervised training on rating and question-answering data, mixed.

    python -m export.train.train --checkpoint CKPT --output RUN \\
        --dataset json=koniq_train.json,images=/data/koniq,axis=iqa,min=0,max=100 \\
        --dataset json=iqa_vqa.json,images=/data/qground,weight=0.5 [--lora-rank 64] [--resume]
    torchrun --nproc-per-node 8 -m export.train.train ...      # FSDP over 8 GPUs

Every sample is asked exactly as UniPercept asks it (export/unipercept/reference.py): rating samples with the rating
prompt of their axis, multiple-choice questions with UniPercept's VQA instruction, free questions as InternVL's
chat() asks them. The loss is on answer tokens only: for a rating, the cross-entropy at the answer position
between the model's distribution and the target's score token (the paper's VR-based QA pairs, Sec. 4.1: the answer
is the two-letter token of the rounded score; `--sigma S` instead spreads it as a discretised Gaussian of S points
over the 101 score tokens, the project's soft option); for a question, the cross-entropy of the answer's tokens and the closing <|im_end|>.
Step checkpoints (RUN/checkpoints/step-N/) are sharded trainer state, one file per process (export.train.export_step
makes a model folder of one); the final model in RUN/ is a complete checkpoint folder in the original layout.
See export/train/README.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from export.train.data import DatasetSpec, Sample, load_samples  # noqa: F401  (re-exported for callers)
from export.train.engine import Engine, TrainOptions
from export.train.policy import pad_right
from export.unipercept.reference import expected_score, read_config


def soft_label(target: float, sigma: float) -> torch.Tensor:
    """Discretised Gaussian over scores 0..100 centred at `target` (one-hot when sigma is 0)."""
    scores = torch.arange(101, dtype=torch.float32)
    if sigma <= 0:
        label = torch.zeros(101)
        label[int(round(target))] = 1.0
        return label
    weights = torch.exp(-0.5 * ((scores - target) / sigma) ** 2)
    return weights / weights.sum()


def teacher_forced_rows(prompts, samples: list[Sample]) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
    """Per sample: the input ids, the positions whose logits are scored, and the answer ids they must predict.

    A rating row is the prompt alone (one scored position, the last); a question row is the prompt plus the
    answer without its last token, scored at every position that predicts an answer token.
    """
    rows, positions, answers = [], [], []
    for sample in samples:
        prompt = prompts.prompt_ids(sample)
        answer = [] if sample.task == "rating" else prompts.answer_ids(sample.answer)
        rows.append(prompt + answer[:-1])
        positions.append(list(range(len(prompt) - 1, len(prompt) - 1 + max(1, len(answer)))))
        answers.append(answer)
    return rows, positions, answers


def sample_losses(policy, prompts, samples: list[Sample], pixels: torch.Tensor, sigma: float) -> tuple[list[torch.Tensor], dict]:
    """One forward over a micro-batch; the loss of each sample (answer tokens only) and log metrics."""
    rows, positions, answers = teacher_forced_rows(prompts, samples)
    device = pixels.device
    flat = torch.tensor([(row, index) for row, indexes in enumerate(positions) for index in indexes], device=device)
    log_probs = torch.log_softmax(
        policy("logits", pixel_values=pixels, input_ids=pad_right(rows, prompts.pad_id, device), positions=flat), dim=-1
    )
    score_ids = torch.tensor(prompts.score_ids, device=device)
    losses, metrics, start = [], {"loss": [], "rating_abs_error": [], "answer_nll": []}, 0
    for sample, indexes, answer in zip(samples, positions, answers):
        rows_of_sample = log_probs[start : start + len(indexes)]
        start += len(indexes)
        if sample.task == "rating":
            score_log_probs = rows_of_sample[0, score_ids]
            loss = -(soft_label(sample.target, sigma).to(device) * score_log_probs).sum()
            metrics["rating_abs_error"].append(abs(float(expected_score(score_log_probs.detach())) - sample.target))
        else:
            loss = -rows_of_sample.gather(1, torch.tensor(answer, device=device)[:, None]).mean()
            metrics["answer_nll"].append(float(loss.detach()))
        metrics["loss"].append(float(loss.detach()))
        losses.append(loss)
    return losses, metrics


class DomainAdaptivePretraining:
    """Stage 1: the mixed supervised loss, averaged over the step's samples (all processes together)."""

    metric_names = ("loss", "rating_abs_error", "answer_nll")

    def __init__(self, sigma: float):
        self.sigma = sigma

    def train_step(self, engine: Engine, step: int, samples: list[Sample]) -> dict:
        metrics: dict[str, list] = {}
        for micro in engine.micro_batches(samples):
            with engine.autocast:
                losses, micro_metrics = sample_losses(engine.policy, engine.prompts, micro, engine.pixels(micro), self.sigma)
            (torch.stack(losses).sum() / len(samples)).backward()
            for key, values in micro_metrics.items():
                metrics.setdefault(key, []).extend(values)
        engine.optimizer_step()
        return {key: values for key, values in metrics.items() if values}


def run_training(options: TrainOptions) -> Path:
    """Train stage 1 as `options` says; returns the output folder, which then holds the final checkpoint."""
    return Engine(options, lora_dropout=0.05).run(DomainAdaptivePretraining(options.sigma))


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options both stages share."""
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint folder to start from (original InternVL layout)")
    parser.add_argument("--output", type=Path, required=True, help="run folder: checkpoints/step-N/ and the final checkpoint")
    parser.add_argument(
        "--dataset",
        action="append",
        required=True,
        help="json=FILE,images=DIR[,axis=iaa|iqa|ista,min=LO,max=HI][,weight=W][,task=rating|mcq|text] (repeat)",
    )
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=4, help="samples per forward pass, per process")
    parser.add_argument("--grad-accum", type=int, default=4, help="forward passes per optimizer step")
    parser.add_argument("--lr", type=float, default=1e-5, help="peak learning rate (cosine schedule after warm-up)")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    parser.add_argument("--warmup", type=int, default=50, help="linear warm-up steps")
    parser.add_argument(
        "--train", default="mlp1,llm", help="parts to train: comma list of vision, mlp1, llm (or llm-layers: without embeddings/lm_head)"
    )
    parser.add_argument("--lora-rank", type=int, default=0, help="LoRA rank for the LLM (0 = full fine-tuning); needs peft")
    parser.add_argument("--lora-alpha", type=int, default=None, help="LoRA alpha (default 2 x rank)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device (cuda or cpu)")
    parser.add_argument("--no-bf16", action="store_true", help="train in float32 even on GPU")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations to save memory")
    parser.add_argument("--save-every", type=int, default=500, help="write a resumable checkpoint every N steps (0 = only the final)")
    parser.add_argument("--keep-last", type=int, default=2, help="how many step checkpoints to keep")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output")
    parser.add_argument("--seed", type=int, default=0, help="seed for the data order (and GRPO's sampling)")
    parser.add_argument("--workers", type=int, default=2, help="image decoding threads")
    parser.add_argument("--log-every", type=int, default=10, help="print progress every N steps")


def common_options(args: argparse.Namespace, **extra) -> TrainOptions:
    if args.output.exists() and any(args.output.iterdir()) and not args.resume:
        raise ValueError(f"{args.output}: folder is not empty; pass --resume to continue or choose a new folder")
    read_config(args.checkpoint)
    return TrainOptions(
        checkpoint=args.checkpoint,
        output=args.output,
        datasets=[DatasetSpec.parse(d) for d in args.dataset],
        steps=args.steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup=args.warmup,
        train=tuple(p.strip() for p in args.train.split(",") if p.strip()),
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        device=args.device,
        bf16=False if args.no_bf16 else None,
        gradient_checkpointing=args.gradient_checkpointing,
        save_every=args.save_every,
        keep_last=args.keep_last,
        resume=args.resume,
        seed=args.seed,
        workers=args.workers,
        log_every=args.log_every,
        **extra,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export.train.train", description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    # Default 0: a rating's answer is its score token (UniPercept's VR-based QA pairs, paper Sec. 4.1).
    parser.add_argument(
        "--sigma",
        type=float,
        default=0.0,
        help="rating target: 0 = the score's own token (the paper's); S > 0 = Gaussian soft label of S points",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run_training(common_options(args, sigma=args.sigma))
    except (OSError, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
