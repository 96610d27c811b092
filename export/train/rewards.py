"""Stage 2 rewards (UniPercept, arXiv 2512.21675, Sec. 4.2) and GRPO's group-relative advantages.

Visual rating, the paper's Eq. 2 ("Adaptive Gaussian Soft Reward"), p and g the rated and true score in 0-100:

    r_vr = exp(-|p - g|^2 / (2 sigma_dyn^2)),   sigma_dyn = sigma_0 * (1 + alpha * |p - g| / 100)

The paper names sigma_0 (base smoothing) and alpha (adaptivity) without giving alpha; its training details say
"sigma = 0.8". Its Figure 6 shows four worked examples (error 5 -> 0.827, 10 -> 0.475, 20 -> 0.059,
50 -> 0.000); sigma_0 = 8 score points (0.8 on a 0-10 scale) with alpha = 0.25 reproduces all four to three
decimals (our fit), so those are the defaults.

Multiple choice, the paper's Eq. 1: 1 when the reply's first character is the right letter (how UniPercept
scores VQA), else 0. Free text (not in the paper's RL stage, which uses multiple choice): token-level F1 between
the normalised reply and answer, plus a format reward (weighted by --format-weight) for a non-empty reply that
ends with <|im_end|> within the token budget.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter

import torch

# Eq. 2 of the paper (Sec. 4.2) names sigma_0 and alpha without values (Sec. 5.1: "sigma=0.8"). These two reproduce
# its Fig. 6 worked examples to three decimals (error 5 -> 0.827, 10 -> 0.475, 20 -> 0.059, 50 -> 0.000): a fit,
# in score points on 0-100 (0.8 on a 0-10 scale), documented in docs/unipercept.md.
SIGMA_0 = 8.0
ALPHA = 0.25


def rating_reward(predicted: float, target: float, sigma_0: float = SIGMA_0, alpha: float = ALPHA) -> float:
    """UniPercept's adaptive Gaussian soft reward for a rated score (both in 0-100)."""
    error = abs(predicted - target)
    sigma = sigma_0 * (1.0 + alpha * error / 100.0)
    return math.exp(-(error**2) / (2.0 * sigma**2))


def choice_reward(reply: str, answer: str) -> float:
    """1 when the reply's first character is the answer letter (UniPercept's VQA check), else 0."""
    return 1.0 if reply.strip()[:1] == answer.strip()[:1] else 0.0


def _words(text: str) -> list[str]:
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return [w for w in text.split() if w not in ("a", "an", "the")]


def text_answer_reward(reply: str, answer: str) -> float:
    """Token F1 between reply and reference answer after lower-casing and dropping punctuation and articles."""
    said, wanted = _words(reply), _words(answer)
    common = sum((Counter(said) & Counter(wanted)).values())
    if not said or not wanted or common == 0:
        return float(said == wanted)
    precision, recall = common / len(said), common / len(wanted)
    return 2 * precision * recall / (precision + recall)


def format_reward(reply: str, terminated: bool) -> float:
    """1 for a non-empty reply that closed its turn (<|im_end|>) within the token budget and leaks no markup."""
    return 1.0 if terminated and reply.strip() and not re.search(r"<\|?/?[a-zA-Z_]+\|?>", reply) else 0.0


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """GRPO: each rollout's reward relative to its group, (r - mean) / (std + eps); zeros for a uniform group."""
    return (rewards - rewards.mean()) / (rewards.std(unbiased=False) + eps)
