"""A reward for image-generation training (RL fine-tuning of a diffusion or autoregressive generator):
UniPercept's third use, scoring a batch of generated images into one number per image.

    from perceptlite.reward import PerceptualReward

    reward = PerceptualReward()                     # iaa, iqa and ista equally; the bundled student model
    for step in range(steps):
        images = pipeline(prompts, output_type="pt").images   # NCHW float tensor in [0, 1]
        rewards = reward(images)                    # float32 array, one reward per image, 0-1 (NaN: failed)
        ok = ~np.isnan(rewards)

The reward of an image is the weighted mean of its axis scores divided by 100, so with
non-negative weights it lies in [0, 1]. The default model is perceptlite's bundled student (fast,
distilled), not UniPercept itself; pass ``model="path/to/unipercept-gguf"`` for UniPercept through
llama.cpp. An image that cannot be scored gets ``failed_reward``: NaN by default, so that it is
masked out rather than read as a very bad image (a 0 would become a large negative advantage after
group normalisation). :meth:`PerceptualReward.score` returns the mask and the reasons too, and
:meth:`PerceptualReward.flow_grpo` gives a Flow-GRPO-style ``fn(images, prompts, metadata)``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .package.manifest import ModelPackage
from .records import AXES
from .scorer import ScoreOptions, Scorer

__all__ = ["PerceptualReward", "RewardBatch"]

# UniPercept's headline reward ("UniPercept Reward (All)", paper Table 5) combines all three axes.
DEFAULT_WEIGHTS = {"iaa": 1.0, "iqa": 1.0, "ista": 1.0}
MAX_WEIGHT = 1e6  # far above any sensible ratio; guards against overflow when the weights are summed

ImageLike = Any  # a PIL image, a numpy array or a torch tensor (see PerceptualReward.__call__)


@dataclass
class RewardBatch:
    """The rewards of one batch with what lies behind them, all in input order."""

    rewards: np.ndarray  # float32, failed_reward where ok is False
    ok: np.ndarray  # bool, True where the image was scored
    scores: dict[str, np.ndarray]  # axis -> float32 scores 0-100 (NaN where not scored)
    errors: list[str | None]  # why an image was not scored


class PerceptualReward:
    """Calls a Scorer on a batch of generated images and combines the axes into one reward per image."""

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        model: str | os.PathLike[str] | ModelPackage | None = None,
        options: ScoreOptions | None = None,
        *,
        failed_reward: float = math.nan,
        **fields: Any,
    ):
        """`weights`: {axis: weight} over iaa, iqa, ista (default all three equally); `model`,
        `options` and keyword `fields` as for :class:`perceptlite.Scorer`. `failed_reward`: the
        reward of an image that cannot be scored (NaN by default)."""
        self.weights = _normalised(DEFAULT_WEIGHTS if weights is None else weights)
        self.failed_reward = float(failed_reward)
        self.scorer = Scorer(model, options, **fields)

    def __call__(self, images: Iterable[ImageLike] | ImageLike) -> np.ndarray:
        """One float32 reward per image, in input order. `images`: a list of PIL images, numpy arrays
        (HxWx3 uint8, or floats in [0, 1]) or torch tensors (CHW float in [0, 1], HWC uint8), or one
        batch: a numpy NxHxWx3 array, a torch NCHW float tensor in [0, 1] or NHWC uint8 tensor.
        A single HxWx3 array or CHW tensor is one image."""
        return self.score(images).rewards

    def score(self, images: Iterable[ImageLike] | ImageLike) -> RewardBatch:
        """The rewards with the per-axis scores, the mask of scored images and the failures' reasons."""
        batch = as_images(images)
        count = len(batch)
        rewards = np.full(count, self.failed_reward, dtype=np.float32)
        ok = np.zeros(count, dtype=bool)
        scores = {axis: np.full(count, np.nan, dtype=np.float32) for axis in self.weights}
        errors: list[str | None] = [None] * count
        for index, result in enumerate(self.scorer.score_many(batch)):
            values = {axis: value for axis, value in result.scores().items() if value is not None}
            missing = [axis for axis in self.weights if axis not in values]
            if not result.ok or missing:
                errors[index] = result.error or f"the model gives no {', '.join(missing)} score"
                continue
            for axis in self.weights:
                scores[axis][index] = values[axis]
            rewards[index] = sum(weight * values[axis] for axis, weight in self.weights.items()) / 100.0
            ok[index] = True
        return RewardBatch(rewards, ok, scores, errors)

    def flow_grpo(self) -> Callable[[Any, Sequence[str], Any], tuple[np.ndarray, dict[str, Any]]]:
        """A reward function in Flow-GRPO's form: ``fn(images, prompts, metadata) -> (scores, info)``.

        `prompts` and `metadata` are accepted and ignored (the reward looks at the images only);
        `info` holds the mask ``ok``, the ``errors`` and each axis's scores (0-100)."""

        def reward_fn(images: Any, prompts: Sequence[str], metadata: Any) -> tuple[np.ndarray, dict[str, Any]]:
            batch = self.score(images)
            return batch.rewards, {"ok": batch.ok, "errors": batch.errors, **batch.scores}

        return reward_fn


def _normalised(weights: Mapping[str, float]) -> dict[str, float]:
    """Weights over the known axes, finite and not huge, scaled so that their absolute values sum to 1."""
    unknown = sorted(set(weights) - set(AXES))
    if unknown:
        raise ValueError(f"unknown axis {', '.join(unknown)} (use {', '.join(AXES)})")
    for axis, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float, np.number)):
            raise ValueError(f"weight of {axis} must be a number, not {weight!r}")
        try:
            finite = math.isfinite(weight)
        except OverflowError:  # an int beyond float range
            finite = False
        if not finite or abs(weight) > MAX_WEIGHT:
            raise ValueError(f"weight of {axis} must be a finite number of magnitude at most {MAX_WEIGHT:g}, not {weight!r}")
    total = sum(abs(float(w)) for w in weights.values())
    if not total:
        raise ValueError("give at least one non-zero axis weight")
    return {axis: float(w) / total for axis, w in weights.items() if w}


def as_images(images: Iterable[ImageLike] | ImageLike) -> list[Image.Image | np.ndarray]:
    """What a generator hands over -> a list of PIL images / HxWx3 (or HxW) uint8 arrays, one per image."""
    if _is_tensor(images):
        return _tensor_images(images)
    if isinstance(images, np.ndarray):
        if images.ndim not in (2, 3, 4):
            raise ValueError(f"an array must be one HxW / HxWx3 image or an NxHxWx3 batch, not shape {images.shape}")
        if images.ndim == 4:
            return [_uint8(image) for image in images]
        return [_uint8(images)]  # one HxWx3 / HxW array is one image, not H images
    if isinstance(images, Image.Image):
        return [images]
    converted: list[Image.Image | np.ndarray] = []
    for image in images:
        converted.extend(_tensor_images(image) if _is_tensor(image) else [_uint8(image) if isinstance(image, np.ndarray) else image])
    return converted


def _uint8(array: np.ndarray) -> np.ndarray:
    """An array as it is if uint8; floats (taken as 0-1) rounded to uint8."""
    if array.dtype.kind == "f":
        return (np.clip(np.nan_to_num(array), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return array


def _is_tensor(value: Any) -> bool:
    # By module name, so that torch is imported only when a tensor is actually given.
    return type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach")


def _tensor_images(tensor: Any) -> list[Image.Image | np.ndarray]:
    """A torch tensor -> HxWx3 uint8 arrays: float tensors are CHW / NCHW in [0, 1], uint8 ones HWC / NHWC.

    Only the tensor's own methods are used, so the runtime never imports torch itself."""
    tensor = tensor.detach().cpu()
    if tensor.ndim not in (3, 4):
        raise ValueError(f"expected a CHW / NCHW float or HWC / NHWC uint8 tensor, got shape {tuple(tensor.shape)}")
    batch = tensor if tensor.ndim == 4 else tensor.unsqueeze(0)
    if str(batch.dtype) == "torch.uint8":
        return list(batch.numpy())
    if not batch.is_floating_point():
        raise ValueError(f"expected a float (0-1) or uint8 tensor, got {batch.dtype}")
    pixels = batch.float().nan_to_num(0.0).clamp(0.0, 1.0).mul(255.0).add(0.5).byte()
    hwc = pixels.permute(0, 2, 3, 1).contiguous().numpy()
    return [image[:, :, 0] if image.shape[2] == 1 else image for image in hwc]  # one channel: gray
