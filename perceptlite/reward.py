"""A reward for image-generation training (RL fine-tuning of a diffusion or autoregressive generator):
UniPercept's third use, scoring a batch of generated images into one number per image.

    from perceptlite.reward import PerceptualReward

    reward = PerceptualReward({"iaa": 0.5, "iqa": 0.5})   # weights over the axes; the bundled model
    for step in range(steps):
        images = pipeline(prompts).images                   # a list of PIL images (or HxWx3 arrays)
        rewards = reward(images)                            # float32 array, one reward per image, 0-1
        loss = policy_loss(log_probs, rewards)              # e.g. GRPO / DDPO advantages from rewards

The reward of an image is the weighted mean of its axis scores divided by 100, so with
non-negative weights it lies in [0, 1]. An image that cannot be scored gets ``failed_reward``.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from PIL import Image

from .package.manifest import ModelPackage
from .records import AXES
from .scorer import ScoreOptions, Scorer

__all__ = ["PerceptualReward"]

DEFAULT_WEIGHTS = {"iaa": 1.0, "iqa": 1.0}  # aesthetics and technical quality, as in UniPercept's RL reward use


class PerceptualReward:
    """Calls a Scorer on a batch of generated images and combines the axes into one reward per image."""

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        model: str | os.PathLike[str] | ModelPackage | None = None,
        options: ScoreOptions | None = None,
        *,
        failed_reward: float = 0.0,
        **fields: Any,
    ):
        """`weights`: {axis: weight} over iaa, iqa, ista (default iaa and iqa equally); `model`,
        `options` and keyword `fields` as for :class:`perceptlite.Scorer`."""
        weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        unknown = sorted(set(weights) - set(AXES))
        if unknown:
            raise ValueError(f"unknown axis {', '.join(unknown)} (use {', '.join(AXES)})")
        _check_weights(weights)
        total = sum(abs(w) for w in weights.values())
        if not math.isfinite(total):
            raise ValueError("axis weights too large: their sum overflows; scale them down")
        if not total:
            raise ValueError("give at least one non-zero axis weight")
        self.weights = {axis: float(w) / total for axis, w in weights.items() if w}
        self.failed_reward = float(failed_reward)
        self.scorer = Scorer(model, options, **fields)

    def __call__(self, images: Iterable[Image.Image | np.ndarray] | np.ndarray) -> np.ndarray:
        """One float32 reward per image, in input order. `images`: PIL images, HxWx3 arrays (uint8,
        or floats in [0, 1] as generators output them), or one NxHxWx3 array."""
        batch = [_as_image(image) for image in _images_of(images)]
        rewards = np.full(len(batch), self.failed_reward, dtype=np.float32)
        for index, result in enumerate(self.scorer.score_many(batch)):
            scores = result.scores()
            weighted = [weight * value for axis, weight in self.weights.items() if (value := scores[axis]) is not None]
            if result.ok and len(weighted) == len(self.weights):
                rewards[index] = sum(weighted) / 100.0
        return rewards


def _check_weights(weights: Mapping[str, Any]) -> None:
    """Every weight a finite real number: NaN or infinity would make every reward NaN."""
    for axis, weight in weights.items():
        try:
            finite = not isinstance(weight, bool) and isinstance(weight, numbers.Real) and math.isfinite(float(weight))
        except OverflowError:  # an int beyond float range
            finite = False
        if not finite:
            raise ValueError(f"weight of {axis} is {weight!r}; axis weights must be finite numbers")


def _images_of(images: Iterable[Image.Image | np.ndarray] | np.ndarray) -> Iterable[Image.Image | np.ndarray]:
    """The images of a batch; one array must be NxHxWx3 (a single HxWx3 image would read as H images)."""
    if isinstance(images, np.ndarray) and images.ndim != 4:
        raise ValueError(f"an array batch must be NxHxWx3, not shape {images.shape}; pass one image as [image]")
    return images


def _as_image(image: Image.Image | np.ndarray) -> Image.Image | np.ndarray:
    """A PIL image or uint8 array as it is; a float array in [0, 1] as uint8."""
    if isinstance(image, np.ndarray) and image.dtype.kind == "f":
        return (np.clip(np.nan_to_num(image), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return image
