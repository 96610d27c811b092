"""Stage 2, task-aligned RL: GRPO on visual rating and question answering (UniPercept, arXiv 2512.21675, Sec. 4.2).

    python -m export.train.grpo --checkpoint STAGE1_RUN --output RUN2 \\
        --dataset json=koniq_train.json,images=/data/koniq,axis=iqa,min=0,max=100 \\
        --dataset json=vqa_train.json,images=/data/vqa --lora-rank 64 --group-size 8 --beta 0.001 --clip 0.2
    torchrun --nproc-per-node 8 -m export.train.grpo ...      # FSDP over 8 GPUs

Per prompt, G answers are sampled from the current policy: for a rating, G score tokens from the softmax over
the 101 score tokens at the answer position (the distribution UniPercept's token-as-score rating reads); for a
question, G replies generated with temperature. Each answer gets its reward (export/train/rewards.py), the
advantages are group-relative, and the loss is PPO's clipped ratio times the advantage plus beta times the k3
estimate of KL(policy || reference), over all answer tokens of the group (1 / sum |o_i|, the paper's Eq. 3).
The reference is the frozen start: with LoRA-only training it is the same model with the adapters off (no second
copy of the weights); otherwise a frozen copy. Rollouts are seeded by (seed, step, sample), so a resumed run
samples what the uninterrupted run would have.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from export.train.engine import Engine, TrainOptions
from export.train.policy import pad_right
from export.train.rewards import (
    ALPHA,
    SIGMA_0,
    choice_reward,
    format_reward,
    group_advantages,
    rating_reward,
    text_answer_reward,
)
from export.train.train import add_common_arguments, common_options

OBJECTIVES = ("grpo", "eq3")


def clipped_surrogate(
    ratio: torch.Tensor, advantages: torch.Tensor, rewards: torch.Tensor, clip: float, objective: str = "grpo"
) -> torch.Tensor:
    """Per-token PPO surrogate, (G, T) from ratio (G, T) and per-answer advantages and rewards (G,).

    "grpo": min(rho A, clip(rho, 1 - eps, 1 + eps) A), the GRPO objective of VLM-R1, which UniPercept adapted.
    "eq3": the paper's Eq. 3 as printed (Sec. 4.2), the same multiplied by the answer's reward r_i, so an answer
    with reward 0 contributes nothing whatever its advantage.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r} (use {' or '.join(OBJECTIVES)})")
    advantages = advantages[:, None]
    surrogate = torch.min(ratio * advantages, torch.clamp(ratio, 1 - clip, 1 + clip) * advantages)
    return surrogate * rewards[:, None] if objective == "eq3" else surrogate


@dataclass
class GrpoSettings:
    group_size: int = 8  # G, the paper's n = 8
    beta: float = 0.001  # KL weight (paper: 0.001)
    clip: float = 0.2  # PPO clip epsilon (paper: 0.2)
    temperature: float = 1.0
    max_new_tokens: int = 64
    sigma_0: float = SIGMA_0
    alpha: float = ALPHA
    format_weight: float = 0.5
    objective: str = "grpo"  # or "eq3": the paper's Eq. 3 as printed (surrogate x r_i)


@dataclass
class Rollout:
    """One prompt's group: the sequences scored, the sampled answer tokens and what the loss needs about them."""

    pixels: torch.Tensor  # (1, 3, 448, 448)
    input_ids: torch.Tensor  # (rows, L)
    positions: torch.Tensor  # (K, 2) row, index of every scored position
    actions: torch.Tensor  # (G, T) sampled token (rating: index 0..100 into the score tokens)
    mask: torch.Tensor  # (G, T) 1 for real answer tokens
    old_log_probs: torch.Tensor  # (G, T)
    reference_log_probs: torch.Tensor | None  # (G, T)
    advantages: torch.Tensor  # (G,)
    rewards: torch.Tensor  # (G,)
    rating: bool


class TaskAlignedRL:
    """Stage 2: GRPO. One data step = rollouts for the step's prompts, then `updates_per_step` optimizer steps."""

    metric_names = ("reward", "kl", "clipped")

    def __init__(self, settings: GrpoSettings):
        self.settings = settings

    # -- log-probabilities of sampled answers ------------------------------------------------------------

    def _answer_log_probs(self, policy, rollout: Rollout, reference: bool = False) -> torch.Tensor:
        """(G, T) log-probabilities of the rollout's answer tokens under the policy (or the reference)."""
        logits = policy(
            "logits", reference=reference, pixel_values=rollout.pixels, input_ids=rollout.input_ids, positions=rollout.positions
        )
        if rollout.rating:
            log_probs = torch.log_softmax(logits[:, self.score_ids], dim=-1)  # (1, 101): the rater's distribution
            return log_probs[0][rollout.actions]
        log_probs = torch.log_softmax(logits, dim=-1).gather(1, rollout.actions.reshape(-1, 1))
        return log_probs.reshape(rollout.actions.shape)

    def _reference_log_probs(self, engine: Engine, rollout: Rollout) -> torch.Tensor | None:
        if self.settings.beta == 0:
            return None
        if engine.reference is not None:
            return self._answer_log_probs(engine.reference, rollout)
        return self._answer_log_probs(engine.policy, rollout, reference=True)

    # -- rollouts ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def _rating_rollout(self, engine: Engine, sample, pixels: torch.Tensor, generator: torch.Generator) -> Rollout:
        prompt = engine.prompts.rating_ids[sample.axis]
        device = pixels.device
        ids = torch.tensor([prompt], device=device)
        positions = torch.tensor([[0, len(prompt) - 1]], device=device)
        logits = engine.policy("logits", pixel_values=pixels, input_ids=ids, positions=positions)[0, self.score_ids]
        scores = torch.multinomial(torch.softmax(logits, dim=-1), self.settings.group_size, replacement=True, generator=generator)
        rewards = torch.tensor([rating_reward(float(s), sample.target, self.settings.sigma_0, self.settings.alpha) for s in scores])
        actions = scores[:, None]
        rollout = Rollout(
            pixels,
            ids,
            positions,
            actions,
            torch.ones_like(actions, dtype=torch.float32),
            torch.log_softmax(logits, dim=-1)[actions],
            None,
            group_advantages(rewards).to(device),
            rewards,
            True,
        )
        rollout.reference_log_probs = self._reference_log_probs(engine, rollout)
        return rollout

    @torch.no_grad()
    def _question_rollout(self, engine: Engine, sample, pixels: torch.Tensor, generator: torch.Generator) -> Rollout:
        prompts, settings, device = engine.prompts, self.settings, pixels.device
        prompt = prompts.prompt_ids(sample)
        replies = engine.policy(
            "sample",
            pixel_values=pixels,
            prompt_ids=torch.tensor([prompt], device=device),
            count=settings.group_size,
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            stop_ids=prompts.stop_ids,
            generator=generator,
        )
        stops = torch.isin(replies, torch.tensor(prompts.stop_ids, device=device))
        lengths = torch.where(stops.any(1), stops.int().argmax(1) + 1, torch.full_like(stops[:, 0], replies.shape[1], dtype=torch.long))
        mask = (torch.arange(replies.shape[1], device=device)[None, :] < lengths[:, None]).float()
        rewards = torch.tensor(
            [
                self._question_reward(sample, prompts.decode(row[:n].tolist()), bool(stop.any()))
                for row, n, stop in zip(replies, lengths.tolist(), stops)
            ]
        )
        rows = [prompt + row[:-1].tolist() for row in replies]
        positions = torch.tensor([(g, len(prompt) - 1 + t) for g in range(len(rows)) for t in range(replies.shape[1])], device=device)
        rollout = Rollout(
            pixels,
            pad_right(rows, prompts.pad_id, device),
            positions,
            replies,
            mask,
            None,
            None,
            group_advantages(rewards).to(device),
            rewards,
            False,
        )
        rollout.old_log_probs = self._answer_log_probs(engine.policy, rollout)
        rollout.reference_log_probs = self._reference_log_probs(engine, rollout)
        return rollout

    def _question_reward(self, sample, reply: str, terminated: bool) -> float:
        if sample.task == "mcq":
            return choice_reward(reply, sample.answer)
        return text_answer_reward(reply, sample.answer) + self.settings.format_weight * format_reward(reply, terminated)

    def _rollouts(self, engine: Engine, step: int, samples: list) -> list[Rollout]:
        rollouts = []
        engine.policy.eval()
        with engine.runtime.gathered(engine.policy, engine.reference):
            for local_index, sample in enumerate(samples):
                global_index = engine.runtime.rank + local_index * engine.runtime.world
                generator = torch.Generator(device=engine.device).manual_seed(
                    engine.options.seed * 1_000_003 + step * 10_007 + global_index
                )
                pixels = engine.pixels([sample])
                with engine.autocast:
                    make = self._rating_rollout if sample.task == "rating" else self._question_rollout
                    rollouts.append(make(engine, sample, pixels, generator))
        engine.policy.train()
        return rollouts

    # -- the loss ------------------------------------------------------------------------------------------

    def group_loss(self, engine: Engine, rollout: Rollout) -> tuple[torch.Tensor, dict]:
        """Clipped policy loss + beta * KL(k3) averaged over the group's answer tokens (paper Eq. 3)."""
        settings = self.settings
        new = self._answer_log_probs(engine.policy, rollout)
        ratio = torch.exp(new - rollout.old_log_probs)
        surrogate = clipped_surrogate(ratio, rollout.advantages, rollout.rewards.to(ratio.device), settings.clip, settings.objective)
        per_token = -surrogate
        kl = torch.zeros_like(new)
        if rollout.reference_log_probs is not None:
            delta = rollout.reference_log_probs - new
            kl = torch.exp(delta) - delta - 1
            per_token = per_token + settings.beta * kl
        tokens = rollout.mask.sum().clamp(min=1)
        loss = (per_token * rollout.mask).sum() / tokens
        clipped = ((ratio - 1).abs() > settings.clip).float()
        kl, clipped = kl.detach(), clipped.detach()
        return loss, {"kl": float((kl * rollout.mask).sum() / tokens), "clipped": float((clipped * rollout.mask).sum() / tokens)}

    def train_step(self, engine: Engine, step: int, samples: list) -> dict:
        self.score_ids = torch.tensor(engine.prompts.score_ids, device=engine.device)
        rollouts = self._rollouts(engine, step, samples)
        metrics: dict[str, list] = {"reward": [float(r) for rollout in rollouts for r in rollout.rewards]}
        for _ in range(engine.options.updates_per_step):
            for rollout in rollouts:
                with engine.autocast:
                    loss, group_metrics = self.group_loss(engine, rollout)
                (loss / len(rollouts)).backward()
                for key, value in group_metrics.items():
                    metrics.setdefault(key, []).append(value)
            engine.optimizer_step()
        return metrics


def run_grpo(options: TrainOptions, settings: GrpoSettings) -> Path:
    """Train stage 2 as `options` and `settings` say; returns the output folder (final checkpoint inside)."""
    engine = Engine(options, lora_dropout=0.0, needs_reference=settings.beta > 0)
    return engine.run(TaskAlignedRL(settings))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export.train.grpo", description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.set_defaults(batch_size=1, grad_accum=8, warmup=0, lr=1e-6)
    parser.add_argument("--group-size", type=int, default=8, help="G: answers sampled per prompt (paper: 8)")
    parser.add_argument("--beta", type=float, default=0.001, help="KL weight to the frozen reference (paper: 0.001; 0 = no reference)")
    parser.add_argument("--clip", type=float, default=0.2, help="PPO clip epsilon (paper: 0.2)")
    parser.add_argument("--updates-per-step", type=int, default=1, help="optimizer steps on each batch of rollouts")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the rollouts")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="reply length limit for question rollouts")
    parser.add_argument("--sigma-0", type=float, default=SIGMA_0, help="rating reward: base width in score points")
    parser.add_argument("--alpha", type=float, default=ALPHA, help="rating reward: how fast the width grows with the error")
    parser.add_argument("--format-weight", type=float, default=0.5, help="weight of the format reward on free-text answers")
    parser.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="grpo",
        help="grpo: the standard clipped surrogate; eq3: the paper's Eq. 3 as printed (surrogate x reward)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        options = common_options(args, updates_per_step=args.updates_per_step)
        settings = GrpoSettings(
            args.group_size,
            args.beta,
            args.clip,
            args.temperature,
            args.max_new_tokens,
            args.sigma_0,
            args.alpha,
            args.format_weight,
            args.objective,
        )
        if settings.group_size < 2:
            raise ValueError("--group-size must be at least 2: advantages are relative to the group")
        run_grpo(options, settings)
    except (OSError, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
